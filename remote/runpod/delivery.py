"""Handing a pod its secrets once it is up, never in its create request (RunPod shows that to whoever reads
the account): over SFTP on the pinned-host-key SSH link, or the pod API's one-time ``PUT /secrets``.

Every attempt gets its own delivery (a resumed job's new pod included, by whichever process launches it: the
command line, or the background supervisor with no terminal open), with a fresh scoped artifact credential.
"""

from __future__ import annotations

import logging
import uuid

from engine.config import JobSpec
from engine.pod_secrets import encode_secrets
from remote.runpod.plan import pod_secrets
from remote.runpod.transport import Link
from store.settings import Settings

log = logging.getLogger(__name__)


def deliver_secrets(link: Link, settings: Settings, job_id: uuid.UUID, spec: JobSpec, bootstrap: str) -> list[str]:
    """Send this attempt's secrets to its pod; the names sent (never the values)."""
    values = pod_secrets(settings, job_id, spec)
    data = encode_secrets(values, bootstrap)
    folder = settings.runpod_secrets_dir.rstrip("/") or "/"
    link.call(lambda transport: transport.deliver_secrets(folder, str(job_id), bootstrap, data))
    names = sorted(values)
    log.info("job %s: secrets delivered to its pod (%s)", job_id, ", ".join(names) or "none")
    return names

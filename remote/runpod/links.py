"""The links to the pods this process reaches: one per pod however many threads ask at once, over the transports
the settings prefer, each carrying the pod API token kept for its pod on this machine (remote.runpod.tokens)."""

from __future__ import annotations

import threading
from pathlib import Path

from remote.provider import RunHandle
from remote.runpod.http import HttpTransport
from remote.runpod.pods import POD_API_PORT, PodInfo
from remote.runpod.ssh import HostKeyPins, SshTransport, ensure_key_pair
from remote.runpod.tokens import PodTokens
from remote.runpod.transport import Link, PodEndpoint, PodTransport
from store.settings import Settings


class PodLinks:
    """A Link per pod, made on first use and kept until the pod is dropped."""

    def __init__(self, settings: Settings, pins: HostKeyPins, *, key_dir: Path, http_chunk_bytes: int) -> None:
        self.settings = settings
        self.pins = pins
        self.key_dir = key_dir
        self.http_chunk_bytes = http_chunk_bytes
        self.tokens = PodTokens(settings.paths.data_dir / "pod-tokens")
        self._links: dict[str, Link] = {}
        # Making a link opens no connection (its transports connect on first use), so one lock held while it
        # is made keeps threads from making two links, two SSH connections, to one pod without slowing others.
        self._lock = threading.Lock()

    def proxy_url(self, pod_id: str) -> str:
        return self.settings.runpod_proxy_url.format(pod_id=pod_id, port=POD_API_PORT)

    def make(self, pod: PodInfo, workdir: str, token: str) -> Link:
        """A new link to ``pod`` (not kept: ``keep`` it once the pod answers)."""
        endpoint = PodEndpoint(
            pod_id=pod.id, workdir=workdir, token=token, proxy_url=self.proxy_url(pod.id),
            ssh_host=pod.public_ip, ssh_port=pod.ssh_port,
        )  # fmt: skip
        key, _ = ensure_key_pair(self.key_dir)
        ssh: PodTransport = SshTransport(endpoint, self.settings.runpod_ssh_user, key, self.pins)
        http: PodTransport = HttpTransport(endpoint, chunk_bytes=self.http_chunk_bytes)
        preference = self.settings.runpod_transport
        if preference == "http" or (preference == "auto" and not ssh.available):
            return Link([http, ssh])
        return Link([ssh, http])

    def keep(self, pod_id: str, link: Link) -> None:
        with self._lock:
            self._links[pod_id] = link

    def get(self, pod_id: str, handle: RunHandle) -> Link:
        """The pod's link, made from what ``handle`` says of it when this process has none yet."""
        with self._lock:
            link = self._links.get(pod_id)
            if link is None:
                extra = handle.extra
                pod = PodInfo(
                    id=pod_id, name="", desired_status="RUNNING", cost_per_hr=None, public_ip=extra.get("public_ip"),
                    ssh_port=extra.get("ssh_port"), gpu=None, gpu_count=0, last_started_at=None,
                    network_volume_id=None,
                )  # fmt: skip
                # An attempt recorded before tokens were kept apart holds its token in the handle.
                token = self.tokens.load(pod_id) or str(extra.get("pod_token", ""))
                link = self._links[pod_id] = self.make(pod, handle.workdir, token)
        return link

    def drop(self, pod_id: str) -> None:
        """Close the pod's link and forget its token (the pod is gone)."""
        with self._lock:
            link = self._links.pop(pod_id, None)
        if link is not None:
            link.close()
        self.tokens.forget(pod_id)

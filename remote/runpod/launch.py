"""Starting a lorapod pod, whatever it runs (a job, a job's playground): create it on the first GPU type of the
walk that has a machine free, then wait until its process answers — on RunPod's stock image after sending it its
bootstrap files (remote.runpod.stock) — and hand files and secrets to it once it does.

``PodStarter`` is what the provider launches a job with; ``ServicePods`` starts a pod that serves a finished job
(its playground, say) the same way, and gives it what the job's own volume would have held: its input files
over the link, and the secrets it needs delivered as a job's are (remote.runpod.delivery), never in its env.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import LorapodError
from engine.checksums import sha256_file
from engine.pod_secrets import BOOTSTRAP_ENV, DIR_ENV, encode_secrets
from remote.runpod.client import NoInstances, RestClient
from remote.runpod.errors import NoCapacity, PodJobFailed, PodStartFailed, RunPodError, TransportError
from remote.runpod.http import CHUNK_BYTES
from remote.runpod.links import PodLinks
from remote.runpod.plan import PodPlan
from remote.runpod.pods import POD_API_PORT, PodInfo
from remote.runpod.ssh import HostKeyPins, ensure_key_pair
from remote.runpod.stock import boot_files
from remote.runpod.transport import Link, PodTransport
from store.db import Ledger
from store.settings import Settings

log = logging.getLogger(__name__)

START_POLL_S = 3.0
# A stock-image pod installs the train stack before its process starts (once per network volume).
STOCK_INSTALL_S = 1200.0


class PodStarter:
    """Creating pods and waiting until they answer (one GPU type per create request, in the walk's order)."""

    def __init__(
        self, settings: Settings, rest: RestClient, pins: HostKeyPins, links: PodLinks,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.rest = rest
        self.pins = pins
        self.links = links
        self.sleep = sleep

    def create(
        self, job_id: uuid.UUID, plan: PodPlan, env: dict[str, str], *, walk: list[str] | None = None,
        edit: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: body,
    ) -> tuple[PodInfo, str]:  # fmt: skip
        """A pod on the first GPU type of ``walk`` (default: the plan's, those the job fits) with a machine free;
        ``edit`` adjusts each create request (a service pod's name and ports)."""
        tried: list[str] = []
        for gpu in plan.walk if walk is None else walk:
            tried.append(gpu)
            body = edit(plan.request(job_id, gpu, env))
            try:
                created = self._create_one(body)
            except NoInstances as exc:
                log.info("no capacity for %s: %s", gpu, exc)
                continue
            pod = PodInfo.parse(created)
            log.info("pod %s created on %s at $%s/h", pod.id, gpu, pod.cost_per_hr)
            return pod, gpu
        resources = plan.spec.resources
        raise NoCapacity(tried, resources.cloud_type.value, resources.gpu_count)

    def _create_one(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.rest.create_pod(body)
        except NoInstances:
            raise
        except RunPodError as exc:
            if not body.get("interruptible"):
                raise
            # Interruptible pods are asked for only when the spec says so, and RunPod is withdrawing them.
            log.warning("no interruptible pod (%s): asking for an on-demand one", exc)
            return self.rest.create_pod({**body, "interruptible": False})

    def wait_until_ready(
        self, pod: PodInfo, workdir: str, token: str, boot: dict[str, Path] | None
    ) -> tuple[PodInfo, Link]:
        """Wait until the pod's process answers over a transport; PodStartFailed (pod deleted) otherwise.
        A stock-image pod is sent its bootstrap files first, then given time to install its virtualenv."""
        timeout = self.settings.runpod_start_timeout_s + (STOCK_INSTALL_S if boot else 0.0)
        deadline = time.monotonic() + timeout
        forgotten: set[tuple[str, int]] = set()
        link: Link | None = None
        problem = "it did not become reachable"
        while True:
            found = self.rest.get_pod(pod.id)
            if found is None:
                raise PodStartFailed(f"pod {pod.id} disappeared while it was starting")
            pod = PodInfo.parse(found)
            if pod.desired_status in ("EXITED", "TERMINATED"):
                problem = f"it stopped while starting ({pod.desired_status})"
                break
            if pod.running:
                if pod.public_ip and pod.ssh_port and (pod.public_ip, pod.ssh_port) not in forgotten:
                    # A new pod owns this address now: its host key is pinned on first use.
                    self.pins.forget(pod.public_ip, pod.ssh_port)
                    forgotten.add((pod.public_ip, pod.ssh_port))
                link = self.links.make(pod, workdir, token)
                try:
                    if boot is not None:
                        link.call(_upload_boot(boot))
                        log.info("pod %s: bootstrap files sent; it installs its virtualenv now", pod.id)
                        boot = None
                    link.call(lambda t: t.check())
                    return pod, link
                except PodJobFailed as exc:
                    problem = str(exc)
                    break
                except TransportError as exc:
                    problem = f"it did not become reachable ({exc})"
            if time.monotonic() >= deadline:
                problem += f" within {timeout:.0f} s"
                break
            self.sleep(START_POLL_S)
        logs = start_logs(link)
        self.rest.delete_pod(pod.id)
        raise PodStartFailed(f"pod {pod.id} did not start: {problem}; it has been deleted.{logs}")


def start_logs(link: Link | None) -> str:
    """The last lines the pod logged, for a message saying why it did not start."""
    if link is None:
        return " No logs could be read (the RunPod console keeps the container's log)."
    try:
        text = link.call(lambda t: t.tail_pod_log())
    except TransportError:
        return " No logs could be read (the RunPod console keeps the container's log)."
    lines = text.strip().splitlines()[-20:]
    return "\nIts last log lines:\n" + "\n".join(lines) if lines else " Its log is empty."


def _upload_input(path: Path, sha256: str) -> Callable[[PodTransport], None]:
    return lambda transport: transport.upload_input(path, path.name, sha256)


def _upload_boot(files: dict[str, Path]) -> Callable[[PodTransport], None]:
    return lambda transport: transport.upload_boot(files)


@dataclass
class ServicePod:
    """A pod created to serve a finished job: what it needs handed over once it answers."""

    pod: PodInfo
    gpu: str
    job_id: uuid.UUID
    workdir: str
    token: str  # the pod API's bearer token (its sha256 is in the pod's env)
    bootstrap: str | None  # this pod's one-time token for its secrets delivery; None: nothing to hand over
    boot: dict[str, Path] | None = field(default=None, repr=False)  # the stock image's bootstrap files
    link: Link | None = field(default=None, repr=False)  # once handed over: the link it answered on

    def failed(self) -> str | None:
        """Why the pod's process has failed, with its last log lines (None while it lives, or cannot be asked)."""
        if self.link is None:
            return None
        try:
            self.link.call(lambda t: t.check())
        except PodJobFailed as exc:
            return f"{exc}.{start_logs(self.link)}"
        except TransportError:
            return None
        return None

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


class ServicePods:
    """Pods that serve a finished job rather than run it (its playground; an export), started as a job's pod is.

    ``create`` rents the pod (bill it from then on) and ``hand_over`` waits until its process answers — over
    SSH on the stock image, after its bootstrap — then sends ``inputs`` into its workdir's ``inputs/`` (checked
    by sha256) and delivers ``secrets`` to its tmpfs, as a job's are. A pod that needs neither (lorapod's image,
    everything on the network volume) is not waited for here: the caller reaches its service directly.
    """

    def __init__(
        self, settings: Settings, rest: RestClient, pins: HostKeyPins, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.settings = settings
        self.links = PodLinks(settings, pins, key_dir=settings.paths.data_dir / "ssh", http_chunk_bytes=CHUNK_BYTES)
        self.starter = PodStarter(settings, rest, pins, self.links, sleep)

    def create(
        self, job_id: uuid.UUID, plan: PodPlan, env: dict[str, str], *, workdir: str, token: str, name: str,
        walk: list[str], handover: bool,
    ) -> ServicePod:  # fmt: skip
        """Rent the pod: its env gets what a hand-over needs (lorapod's public key, a bootstrap token)."""
        env = dict(env)
        bootstrap = None
        if handover or plan.stock:
            bootstrap = secrets.token_urlsafe(32)
            env.update({"LORAPOD_PUBLIC_KEY": ensure_key_pair(self.links.key_dir)[1], BOOTSTRAP_ENV: bootstrap,
                        DIR_ENV: self.settings.runpod_secrets_dir})  # fmt: skip
        boot = boot_files(self.settings.paths.cache_dir) if plan.stock else None  # built before anything is rented

        def edit(body: dict[str, Any]) -> dict[str, Any]:
            if bootstrap is None:  # reached through RunPod's proxy only
                return {**body, "name": name, "ports": [f"{POD_API_PORT}/http"]}
            return {**body, "name": name}

        pod, gpu = self.starter.create(job_id, plan, env, walk=walk, edit=edit)
        return ServicePod(pod, gpu, job_id, workdir, token, bootstrap, boot)

    def hand_over(self, service: ServicePod, inputs: list[Path], values: dict[str, str]) -> ServicePod:
        """Wait until the pod answers, then send it ``inputs`` and deliver ``values`` (its secrets); the pod is
        deleted when that fails (PodStartFailed, TransportError). The link stays open: ``close`` it."""
        if service.bootstrap is None:
            return service
        pod, link = self.starter.wait_until_ready(service.pod, service.workdir, service.token, service.boot)
        try:
            for path in inputs:
                link.call(_upload_input(path, sha256_file(path)))
            data = encode_secrets(values, service.bootstrap)
            folder = self.settings.runpod_secrets_dir.rstrip("/") or "/"
            bootstrap, job_id = service.bootstrap, str(service.job_id)
            link.call(lambda t: t.deliver_secrets(folder, job_id, bootstrap, data))
            log.info("pod %s: %d file(s) sent, secrets delivered (%s)", pod.id, len(inputs), ", ".join(sorted(values)))
        except BaseException:
            link.close()
            self.starter.rest.delete_pod(pod.id)
            raise
        service.pod, service.link = pod, link
        return service


class ServicePodOwner:
    """What rents and watches one kind of service pod (a job's playground, a merge): RunPod's REST client with
    the key it needs, the host-key pins, and the launch shared with a job's pods."""

    def __init__(
        self, settings: Settings, ledger: Ledger, rest: RestClient | None, pins: HostKeyPins | None, *,
        no_key: LorapodError,
    ) -> None:  # fmt: skip
        key = settings.runpod_api_key.get_secret_value() if settings.runpod_api_key else ""
        if not key:
            raise no_key
        self.settings = settings
        self.ledger = ledger
        self.rest = rest or RestClient(settings.runpod_api_url, key)
        if pins is None:
            from store.host_keys import HostKeyStore

            pins = HostKeyStore(ledger)
        self.services = ServicePods(settings, self.rest, pins)

    def _running(self, pod_id: str) -> bool:
        """Whether the pod is up (or RunPod cannot say: not known to be gone)."""
        try:
            found = self.rest.get_pod(pod_id)
        except RunPodError:
            return True  # RunPod's API is busy: not known to be gone
        return found is not None and PodInfo.parse(found).desired_status not in ("EXITED", "TERMINATED")

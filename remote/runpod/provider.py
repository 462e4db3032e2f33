"""The RunPod provider: one pod per job attempt, reached over SSH or the pod API, deleted when the job ends.

launch: delete the job's earlier pods → create one (its env holds no secret), walking the GPU priority list →
wait until its job process answers → upload the dataset → deliver its secrets (remote.runpod.delivery) → keep
the per-attempt pod API token here (remote.runpod.tokens: never in the ledger, which syncs) → hand back a
RunHandle (pod id, endpoints). Links to pods are made once each (remote.runpod.links).
The pod runs the job alone from then on and deletes itself after a linger; ``release`` copies the packages
and the log here and deletes it at once.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.config import JobSpec
from engine.limits import Limits
from engine.pod import pod_workdir
from remote.hf_token import hf_token_warning, warn_if_hf_token_writes
from remote.provider import EventStream, Provider, ProviderError, RunHandle, RunState, copy_verified
from remote.runpod.client import RestClient
from remote.runpod.delivery import deliver_secrets
from remote.runpod.errors import (
    BadApiKey,
    HostKeyChanged,
    RunPodError,
    TransportError,
)
from remote.runpod.http import CHUNK_BYTES
from remote.runpod.launch import PodStarter
from remote.runpod.links import PodLinks
from remote.runpod.plan import PodPlan, plan_pod, pod_env, pod_secrets
from remote.runpod.pods import PodInfo, pod_name
from remote.runpod.prices import estimated_rate, refresh_prices
from remote.runpod.ssh import HostKeyPins, ensure_key_pair
from remote.runpod.stock import boot_files
from remote.runpod.transport import FailoverFeed, Link, PodTransport
from store.settings import Settings

log = logging.getLogger(__name__)

# Refused before a pod is rented, not found out on it: the engine on the pod would stop at once.
WANDB_ON_A_POD = (
    "report_to=wandb: W&B logs in with an account key, and lorapod keeps keys that open more than one job off "
    "rented machines (docs/security.md), so its pods have neither wandb nor a login; use report_to=tensorboard "
    "(the event files come back in the job's full package) or none"
)

REST_EVERY_S = 10.0  # pod records are read at most this often per pod (RunPod allows ~100 calls a minute)
EXIT_EVERY_S = 2.0


@dataclass
class _Cached:
    at: float
    value: Any


class RunPodStream:
    """A job's events from its pod, over the preferred transport or the other; registered while open."""

    def __init__(self, feed: FailoverFeed, on_close: Callable[[], None]) -> None:
        self.feed = feed
        self._on_close = on_close

    @property
    def after_seq(self) -> int:
        return self.feed.after_seq

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        return self.feed.poll(timeout)

    def close(self) -> None:
        self.feed.close()
        self._on_close()


class RunPodProvider(Provider):
    """Jobs on RunPod GPU pods (see docs/runpod.md)."""

    name = "runpod"

    def __init__(
        self,
        settings: Settings,
        pins: HostKeyPins,
        *,
        rest: RestClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        http_chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        key = settings.runpod_api_key.get_secret_value() if settings.runpod_api_key else ""
        self.settings = settings
        self.rest = rest or RestClient(settings.runpod_api_url, key)
        self.pins = pins
        self.sleep = sleep
        paths = settings.paths
        self.key_dir = paths.data_dir / "ssh"
        self.mirror_dir = paths.jobs_dir
        self.links = PodLinks(settings, pins, key_dir=self.key_dir, http_chunk_bytes=http_chunk_bytes)
        self.starter = PodStarter(settings, self.rest, pins, self.links, sleep)
        self._pods: dict[str, _Cached] = {}
        self._exits: dict[str, _Cached] = {}
        self._streams: dict[str, RunPodStream] = {}

    def __repr__(self) -> str:
        return f"RunPodProvider({self.settings.runpod_api_url!r})"

    # --- launching --------------------------------------------------------------------------------------

    def launch(
        self, job_id: uuid.UUID, spec: JobSpec, *, resume: bool = False, limits: Limits | None = None
    ) -> RunHandle:
        settings = self.settings
        plan = self.plan(spec)
        plan.check()  # nothing is rented for a job that cannot run on it
        for old in self.job_pods(job_id):  # a resume must never run two engines on one workdir
            log.info("deleting pod %s of an earlier attempt", old.id)
            self.rest.delete_pod(old.id)
        workdir = str(pod_workdir(settings.runpod_volume_mount_path, str(job_id)))
        dataset = Path(spec.dataset.dataset_path)
        upload = dataset.is_file()
        pod_spec = spec
        if upload:
            moved = spec.dataset.model_copy(update={"dataset_path": f"{workdir}/inputs/{dataset.name}"})
            pod_spec = spec.model_copy(update={"dataset": moved})
        token, bootstrap = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        _, public_key = ensure_key_pair(self.key_dir)
        env = pod_env(
            settings, job_id, pod_spec, token=token, bootstrap=bootstrap, public_key=public_key, resume=resume,
            dataset=dataset.name if upload else None,
        )  # fmt: skip
        warn_if_hf_token_writes(settings)
        env.update(replace(limits or Limits(), rate_usd_per_hour=estimated_rate(spec, settings)).to_env())
        boot = boot_files(settings.paths.cache_dir) if plan.stock else None  # built before anything is rented
        pod, gpu = self.starter.create(job_id, plan, env)
        try:
            pod, link = self.starter.wait_until_ready(pod, workdir, token, boot)
            if upload:
                sha256 = spec.dataset.dataset_sha256 or ""
                link.call(lambda t: t.upload_input(dataset, dataset.name, sha256))
            deliver_secrets(link, settings, job_id, pod_spec, bootstrap)
            self.links.tokens.save(pod.id, token)  # not in the handle: attempts sync to Postgres
        except BaseException:
            self.rest.delete_pod(pod.id)
            raise
        self.links.keep(pod.id, link)
        extra = {
            "public_ip": pod.public_ip,
            "ssh_port": pod.ssh_port,
            "proxy_url": self.links.proxy_url(pod.id),
            "gpu_type": pod.gpu or gpu,
            "cost_per_hr": pod.cost_per_hr,
            "network_volume_id": pod.network_volume_id or self._volume(spec),
            "transports": link.names,
        }
        return RunHandle(provider=self.name, job_id=str(job_id), workdir=workdir, pod_id=pod.id, extra=extra)

    def _volume(self, spec: JobSpec) -> str | None:
        return spec.resources.network_volume_id or self.settings.runpod_network_volume_id

    def plan(self, spec: JobSpec) -> PodPlan:
        """The pod ``spec`` would get and what stops it, read without renting anything."""
        plan = plan_pod(self.settings, spec, self.rest)
        if spec.hyperparameters.report_to == "wandb":
            plan.problems.append(WANDB_ON_A_POD)
        return plan

    def preflight(self, spec: JobSpec) -> None:
        try:
            plan = self.plan(spec)
        except RunPodError as exc:  # RunPod unreachable or the key refused: the launch says so, on the job
            log.info("preflight left to the launch: %s", exc)
            return
        plan.check()

    def describe_launch(self, spec: JobSpec) -> dict[str, Any]:
        plan = self.plan(spec)
        dataset = Path(spec.dataset.dataset_path)
        try:  # placeholders for what a launch makes: only the names are shown
            env = pod_env(
                self.settings, uuid.UUID(int=0), spec, token="", bootstrap="", public_key="", resume=False,
                dataset=dataset.name if dataset.is_file() else None,
            )  # fmt: skip
            delivered = sorted(pod_secrets(self.settings, uuid.UUID(int=0), spec))
        except ProviderError as exc:
            plan.problems.append(str(exc))
            env, delivered = {}, []
        env.update(Limits().to_env())
        # The secrets' names only: they are delivered once the pod is up, never in the create request.
        described = {"provider": self.name, "image": plan.image, **plan.to_dict(list(env))}
        warning = hf_token_warning(self.settings)
        return {**described, "secrets_delivered_after_start": delivered, "warnings": [warning] if warning else []}

    # --- reaching a pod ---------------------------------------------------------------------------------

    def _link(self, handle: RunHandle) -> Link:
        return self.links.get(self._pod_id(handle), handle)

    @staticmethod
    def _pod_id(handle: RunHandle) -> str:
        if not handle.pod_id:
            raise ProviderError(f"job {handle.job_id} has no pod")
        return handle.pod_id

    def _pod(self, pod_id: str) -> PodInfo | None:
        cached = self._pods.get(pod_id)
        if cached is None or time.monotonic() - cached.at >= REST_EVERY_S:
            found = self.rest.get_pod(pod_id)
            cached = self._pods[pod_id] = _Cached(time.monotonic(), PodInfo.parse(found) if found else None)
        return cached.value

    def _exit_marker(self, handle: RunHandle) -> dict[str, Any] | None:
        pod_id = self._pod_id(handle)
        cached = self._exits.get(pod_id)
        if cached is None or (cached.value is None and time.monotonic() - cached.at >= EXIT_EVERY_S):
            try:
                marker = self._link(handle).call(lambda t: t.engine_exit())
            except HostKeyChanged:
                raise
            except TransportError:  # unreachable for now: REST says whether the pod is gone
                marker = None
            cached = self._exits[pod_id] = _Cached(time.monotonic(), marker)
        return cached.value

    # --- the Provider interface -------------------------------------------------------------------------

    def state(self, handle: RunHandle) -> RunState:
        try:
            pod = self._pod(self._pod_id(handle))
        except BadApiKey:
            raise
        except RunPodError as exc:  # RunPod's API is down or busy for now: the pod is not known to be gone
            log.warning("pod %s: state unknown (%s)", handle.pod_id, exc)
            return RunState.RUNNING
        if pod is None or pod.desired_status in ("EXITED", "TERMINATED"):
            return RunState.LOST  # deleted, stopped or preempted: whatever ran in it is gone
        if not pod.running:
            return RunState.STARTING
        marker = self._exit_marker(handle)
        if marker is None or marker.get("pod_id") not in (handle.pod_id, None):
            return RunState.RUNNING
        stream = self._streams.get(self._pod_id(handle))
        if stream is not None and stream.after_seq < int(marker.get("last_seq") or 0):
            return RunState.RUNNING  # ended, but its last events are still on their way
        return RunState.EXITED

    def events(self, handle: RunHandle, after_seq: int) -> EventStream:
        pod_id = self._pod_id(handle)
        stream = RunPodStream(self._link(handle).events(after_seq), lambda: self._unregister(pod_id))
        self._streams[pod_id] = stream
        return stream

    def _unregister(self, pod_id: str) -> None:
        self._streams.pop(pod_id, None)

    def _mirror(self, handle: RunHandle) -> Path:
        return self.mirror_dir / handle.job_id

    def logs(self, handle: RunHandle, offset: int = 0) -> tuple[str, int]:
        copy = self._mirror(handle) / "logs" / "engine.log"
        if copy.is_file():
            with copy.open("rb") as log_file:
                log_file.seek(offset)
                data = log_file.read(1 << 20)
            return data.decode("utf-8", errors="replace"), offset + len(data)
        try:
            return self._link(handle).call(lambda t: t.read_log(offset))
        except HostKeyChanged:
            raise
        except TransportError:
            return "", offset

    def cancel(self, handle: RunHandle, reason: str) -> None:
        try:
            self._link(handle).call(lambda t: t.cancel(reason))
        except TransportError as exc:
            raise ProviderError(
                f"cannot reach pod {handle.pod_id} to ask its engine to stop ({exc}); the pod still runs — "
                "try again, or delete it with `lorapod pods --terminate POD`"
            ) from None

    def terminate(self, handle: RunHandle) -> None:
        self.rest.delete_pod(self._pod_id(handle))
        self._forget(handle)

    def fetch_artifact(self, handle: RunHandle, name: str, dest: Path, *, sha256: str | None = None) -> Path:
        copy = self._mirror(handle) / "packages" / name
        if copy.is_file():
            return copy_verified(copy, dest, sha256)
        try:
            return self._link(handle).call(lambda t: t.download_artifact(name, dest, sha256))
        except TransportError as exc:
            raise ProviderError(f"{name}: the pod cannot be reached and no copy is here ({exc})") from None

    def rate_usd_per_hour(self, handle: RunHandle | None, spec: JobSpec) -> float:
        extra = handle.extra if handle is not None else {}
        billed = extra.get("cost_per_hr")
        return float(billed) if billed else estimated_rate(spec, self.settings, extra.get("gpu_type"))

    def release(self, handle: RunHandle) -> None:
        """Copy the packages and the engine log here, then delete the pod (the pod would after its linger)."""
        if not handle.pod_id:
            return
        try:
            self._keep_results(handle)
        except (ProviderError, OSError) as exc:
            log.warning("pod %s: results not copied (%s)", handle.pod_id, exc)
        finally:
            self.rest.delete_pod(handle.pod_id)
            self._forget(handle)

    def _keep_results(self, handle: RunHandle) -> None:
        mirror = self._mirror(handle)
        link = self._link(handle)
        for artifact in link.call(lambda t: t.list_artifacts()):
            name, digest = str(artifact["name"]), artifact.get("sha256")
            if not (mirror / "packages" / name).is_file():
                link.call(_download(name, mirror / "packages", digest))
        chunks: list[str] = []
        offset = 0
        while True:
            text, offset = link.call(_read_log(offset))
            if not text:
                break
            chunks.append(text)
        (mirror / "logs").mkdir(parents=True, exist_ok=True)
        (mirror / "logs" / "engine.log").write_text("".join(chunks), encoding="utf-8")

    def _forget(self, handle: RunHandle) -> None:
        pod_id = handle.pod_id or ""
        if pod_id:
            self.links.drop(pod_id)
        self._pods.pop(pod_id, None)
        self._exits.pop(pod_id, None)

    # --- beyond the interface ---------------------------------------------------------------------------

    def list_pods(self) -> list[PodInfo]:
        """Every pod whose name marks it as lorapod's."""
        return [pod for pod in (PodInfo.parse(p) for p in self.rest.list_pods()) if pod.job_id is not None]

    def job_pods(self, job_id: uuid.UUID) -> list[PodInfo]:
        return [PodInfo.parse(p) for p in self.rest.list_pods(name=pod_name(job_id))]

    def delete_pod(self, pod_id: str) -> bool:
        return self.rest.delete_pod(pod_id)

    def refresh_prices(self) -> None:
        from presets.gpus import catalogue

        ids = [gpu.id for gpu in catalogue().gpu]
        key = self.settings.runpod_api_key.get_secret_value() if self.settings.runpod_api_key else ""
        refresh_prices(self.settings.paths.cache_dir, self.settings.runpod_graphql_url, key, ids)


def _download(name: str, dest: Path, sha256: str | None) -> Callable[[PodTransport], Path]:
    return lambda transport: transport.download_artifact(name, dest, sha256)


def _read_log(offset: int) -> Callable[[PodTransport], tuple[str, int]]:
    return lambda transport: transport.read_log(offset)

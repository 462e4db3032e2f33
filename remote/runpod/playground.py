"""A RunPod job's playground: a pod started on demand that serves the job's adapter.

quote (the GPU and its hourly rate, shown before anything is rented) → create the pod (its entrypoint serves
``engine.playground`` in place of a job: ``LORAPOD_PLAYGROUND=1``) → record it as an attempt of the job, so
its cost is billed in the ledger and counted by the budget → hand it what it needs (remote.runpod.launch) →
wait until it answers through RunPod's proxy. On lorapod's image with the job's network volume the pod reads
the adapter and the base weights from the volume and is handed nothing. On RunPod's stock image it is
bootstrapped over SSH first, as a job's pod is; and for a job that ran without a network volume its adapter
package is sent from here (the supervisor copied it off the job's pod) and the pod downloads the base weights
from the Hub, with the HF token delivered to its tmpfs as a job's secrets are — never in its env.
Each prompt notes the time in the attempt's handle; the background supervisor (remote.daemon) deletes the pod
``playground_idle_minutes`` after its last use, and brings its cost up to date each round until then. A pod
whose supervisor is gone deletes itself after the job's maximum duration (its watchdog).
"""

from __future__ import annotations

import logging
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from engine import LorapodError
from engine.config import JobSpec
from engine.pod import pod_workdir
from engine.pod_secrets import token_sha256
from remote.hf_token import warn_if_hf_token_writes
from remote.playground import PlaygroundClient, PlaygroundError, wait_until_healthy
from remote.provider import RunHandle
from remote.runpod.client import RestClient
from remote.runpod.errors import RunPodError, TransportError
from remote.runpod.launch import STOCK_INSTALL_S, ServicePod, ServicePodOwner
from remote.runpod.plan import PodPlan, plan_pod
from remote.runpod.pods import POD_API_PORT
from remote.runpod.prices import estimated_rate
from remote.runpod.ssh import HostKeyPins
from remote.runpod.tokens import PodTokens
from store import attempts as attempt_store
from store.db import Ledger
from store.jobs import job_spec, short_id
from store.models import JobAttempt, TrainingJob, utcnow
from store.settings import Settings
from store.status import JobStatus

log = logging.getLogger(__name__)

NAME_PREFIX = "lorapod-play-"  # not lorapod-<job id>: a playground pod is never taken for a job's own
KIND = "playground"
IDLE_OUTCOME = "playground-idle"
STOPPED_OUTCOME = "playground"
GONE_OUTCOME = "playground-gone"
FAILED_OUTCOME = "playground-failed"
# For the quote only: how fast a pod is taken to download the base weights from the Hub (RunPod's hosts are
# often faster); the start waits for them at a quarter of it.
DOWNLOAD_GB_PER_S = 0.1


@dataclass(frozen=True)
class Quote:
    """What a playground pod for a job would be, before it is rented."""

    job_id: uuid.UUID
    gpu: str
    rate_usd_per_hour: float
    idle_minutes: float
    reuse: JobAttempt | None  # a playground pod of this job that is already up
    image: str = ""
    stock: bool = False  # RunPod's stock image: lorapod's train stack is installed at start
    base_model: str = ""
    download_gb: float | None = None  # the base weights the pod downloads (no network volume), else None
    download_source: str = ""
    disk_gb: int | None = None  # the pod's own volume, sized for that download

    @property
    def uploads(self) -> bool:
        """The job ran without a network volume: its adapter is sent, the base weights come from the Hub."""
        return self.download_gb is not None

    @property
    def start_allowance_s(self) -> float:
        """How much longer than an ordinary start this one may take: the install, the download."""
        install = STOCK_INSTALL_S if self.stock else 0.0
        return install + (self.download_gb or 0.0) / (DOWNLOAD_GB_PER_S / 4)

    def describe(self) -> str:
        if self.reuse is not None:
            return f"the job's playground pod {self.reuse.handle.get('pod_id')} is already up"
        text = (
            f"a {self.gpu} pod at ${self.rate_usd_per_hour:.2f}/h, billed to job {short_id(self.job_id)} from its "
            f"start; deleted after {self.idle_minutes:g} min without use"
        )
        slower = []
        if self.stock:
            slower.append(f"it starts on RunPod's stock image ({self.image}) and installs lorapod's train stack first")
        if self.download_gb is not None:
            minutes = max(1, math.ceil(self.download_gb / DOWNLOAD_GB_PER_S / 60))
            slower.append(
                f"the job ran without a network volume: its adapter is sent from here, and the pod downloads "
                f"{self.base_model}'s weights from the Hugging Face Hub ({self.download_gb:g} GB, "
                f"{self.download_source}; about {minutes} min at {DOWNLOAD_GB_PER_S * 1000:.0f} MB/s) onto a "
                f"{self.disk_gb} GB volume"
            )
        if slower:
            joined = "; ".join(slower)
            text += f". {joined[:1].upper()}{joined[1:]}. Its start takes longer, and is billed"
        return text


def playground_name(job_id: uuid.UUID) -> str:
    return f"{NAME_PREFIX}{job_id}"


def is_playground(attempt: JobAttempt) -> bool:
    return bool((attempt.handle.get("extra") or {}).get(KIND))


def open_playgrounds(ledger: Ledger, job_id: uuid.UUID | None = None) -> list[JobAttempt]:
    """Playground pods recorded as up (their attempt not ended), of one job or of all."""
    return [a for a in attempt_store.open_attempts(ledger, job_id) if is_playground(a)]


class PodPlayground:
    """An open playground on a pod: its client, and its attempt in the ledger."""

    def __init__(self, client: PlaygroundClient, ledger: Ledger, attempt: JobAttempt) -> None:
        self.client = client
        self.ledger = ledger
        self.attempt = attempt

    @property
    def pod_id(self) -> str:
        return str(self.attempt.handle.get("pod_id"))

    def touch(self) -> None:
        """Note a use: the idle clock starts again."""
        handle = dict(self.attempt.handle)
        extra = {k: v for k, v in handle.get("extra", {}).items() if k != "starting_until"}  # it has started
        handle["extra"] = {**extra, "last_used_at": utcnow().isoformat()}
        assert self.attempt.id is not None
        attempt_store.update_handle(self.ledger, self.attempt.id, handle)
        self.attempt.handle = handle

    def close(self) -> None:
        """Let go of it here: the pod stays up for the next prompt until the supervisor finds it idle."""
        self.client.close()


class RunPodPlaygrounds(ServicePodOwner):
    """Starting, reusing and deleting playground pods for RunPod jobs."""

    def __init__(
        self, settings: Settings, ledger: Ledger, rest: RestClient | None = None, pins: HostKeyPins | None = None
    ) -> None:
        no_key = PlaygroundError("a RunPod job's playground runs on a pod: set RUNPOD_API_KEY")
        super().__init__(settings, ledger, rest, pins, no_key=no_key)
        self.tokens = PodTokens(settings.paths.data_dir / "pod-tokens")

    def quote(self, job: TrainingJob) -> Quote:
        """The pod a playground for ``job`` would rent, its rate, and what its start involves."""
        if job.status != JobStatus.COMPLETED:
            raise PlaygroundError(f"job {short_id(job.id)} is {job.status}: only a completed job has an adapter to try")
        spec = job_spec(job)
        uploads = not self._volume(spec)
        reuse = next(iter(open_playgrounds(self.ledger, job.id)), None)
        plan = self._plan(spec, uploads)
        gpu = (plan.walk or list(spec.resources.gpu_types))[0]
        return Quote(
            job.id, gpu, estimated_rate(spec, self.settings, gpu), self.settings.playground_idle_minutes, reuse,
            image=plan.image, stock=plan.stock, base_model=spec.base_model,
            download_gb=plan.disk.weights_gb if uploads else None, download_source=plan.disk.weights_source,
            disk_gb=plan.volume_in_gb if uploads else None,
        )  # fmt: skip

    def _volume(self, spec: JobSpec) -> str | None:
        return spec.resources.network_volume_id or self.settings.runpod_network_volume_id

    def _plan(self, spec: JobSpec, uploads: bool) -> PodPlan:
        """The job's pod plan: with no network volume its own volume is sized for the base weights (the Hub's
        file metadata when it can be read), which the playground pod downloads."""
        plan = plan_pod(self.settings, spec, self.rest, hub=uploads)
        if (plan.stock or uploads) and self.settings.runpod_transport == "http":
            needs = "its bootstrap files" if plan.stock else "the job's adapter and the HF token"
            raise PlaygroundError(
                f'this playground pod is handed {needs} over SSH (SFTP), and runpod_transport is "http": '
                'set it to "auto" (docs/playground.md)'
            )
        return plan

    def open(self, quote: Quote) -> PodPlayground:
        """The job's playground pod: the one already up, or a new one as quoted (billed from its creation)."""
        if quote.reuse is not None:
            session = self._reach(quote.reuse)
            if session is not None:
                return session
            self.stop(quote.reuse, GONE_OUTCOME)
        job = _job(self.ledger, quote.job_id)
        spec = job_spec(job)
        plan = self._plan(spec, quote.uploads)
        package = self._adapter_package(job) if quote.uploads else None  # fetched before anything is rented
        if quote.uploads:
            warn_if_hf_token_writes(self.settings)
        token = secrets.token_urlsafe(32)
        workdir = str(pod_workdir(self.settings.runpod_volume_mount_path, str(job.id)))
        walk = [quote.gpu, *(g for g in plan.walk if g != quote.gpu)]
        try:
            service = self.services.create(
                job.id, plan, self._env(job, spec, quote, package, token), workdir=workdir, token=token,
                name=playground_name(job.id), walk=walk, handover=quote.uploads,
            )  # fmt: skip
        except RunPodError as exc:
            raise PlaygroundError(f"no playground pod: {exc}") from None
        attempt = self._record(job, spec, quote, service)
        try:
            self.services.hand_over(service, [package] if package else [], self._secrets(quote))
        except (RunPodError, TransportError) as exc:
            self.stop(attempt, FAILED_OUTCOME)
            raise PlaygroundError(f"the playground pod did not start: {exc}") from None
        try:
            return self._await_healthy(job, quote, attempt, service)
        finally:
            service.close()

    def _record(self, job: TrainingJob, spec: JobSpec, quote: Quote, service: ServicePod) -> JobAttempt:
        """The pod as an attempt of the job, billed from now; its token kept here only."""
        pod = service.pod
        starting = utcnow() + timedelta(seconds=self.settings.runpod_start_timeout_s + quote.start_allowance_s)
        handle = RunHandle(
            provider="runpod", job_id=str(job.id), workdir=service.workdir, pod_id=pod.id,
            extra={KIND: True, "gpu_type": pod.gpu or service.gpu, "cost_per_hr": pod.cost_per_hr,
                   "network_volume_id": self._volume(spec), "proxy_url": self._url(pod.id),
                   "last_used_at": utcnow().isoformat(), "starting_until": starting.isoformat()},
        )  # fmt: skip
        rate = pod.cost_per_hr or quote.rate_usd_per_hour
        attempt = attempt_store.start_attempt(
            self.ledger, job.id, provider="runpod", handle=handle.model_dump(), rate_usd_per_hour=rate,
            gpu_count=spec.resources.gpu_count,
        )  # fmt: skip
        self.tokens.save(pod.id, service.token)
        return attempt

    def _await_healthy(self, job: TrainingJob, quote: Quote, attempt: JobAttempt, service: ServicePod) -> PodPlayground:
        pod_id = service.pod.id
        client = PlaygroundClient(self._url(pod_id), service.token)
        failure: list[str] = []

        def alive() -> bool:
            problem = service.failed()  # a pod handed files over SSH: its process may have failed loading them
            if problem:
                failure.append(problem)
            return not problem and self._running(pod_id)

        # The bootstrap happened before the hand-over; what remains is the download and loading the model.
        timeout = self.settings.runpod_start_timeout_s + quote.start_allowance_s - (
            STOCK_INSTALL_S if quote.stock else 0.0
        )  # fmt: skip
        if not wait_until_healthy(client, timeout, alive=alive):
            client.close()
            self.stop(attempt, FAILED_OUTCOME)
            why = failure[0] if failure else f"it did not answer within {timeout:.0f} s"
            raise PlaygroundError(f"the playground pod {pod_id} did not start: {why}; it has been deleted")
        log.info("playground pod %s up for job %s at $%s/h", pod_id, short_id(job.id), attempt.rate_usd_per_hour)
        session = PodPlayground(client, self.ledger, attempt)
        session.touch()  # its idle time counts from when it can answer, not from its creation
        return session

    def _adapter_package(self, job: TrainingJob) -> Path:
        """The job's adapter package, as the supervisor keeps it here (copied off its pod when it ended)."""
        from remote.supervisor import Supervisor

        folder = self.settings.paths.cache_dir / "playground" / str(job.id)
        try:
            return Supervisor(self.ledger, self.settings).download(job.id, "adapter", folder)
        except LorapodError as exc:
            raise PlaygroundError(
                f"job {short_id(job.id)} ran without a network volume, and its adapter package cannot be had "
                f"here to send to a playground pod: {exc}"
            ) from None

    def _env(self, job: TrainingJob, spec: JobSpec, quote: Quote, package: Path | None, token: str) -> dict[str, str]:
        """The pod's environment: no secret (RunPod shows it to whoever reads the account)."""
        settings = self.settings
        hours = spec.resources.max_hours or settings.max_duration_hours
        env = {
            "LORAPOD_JOB_ID": str(job.id),
            "LORAPOD_PLAYGROUND": "1",
            # Only the token's hash: the pod's env is readable by anyone who can read the RunPod account.
            "LORAPOD_POD_TOKEN_SHA256": token_sha256(token),
            "LORAPOD_WORKSPACE": settings.runpod_volume_mount_path,
            "LORAPOD_MAX_SECONDS": f"{hours * 3600 + quote.start_allowance_s:.0f}",
            "LORAPOD_RUNPOD_API_URL": settings.runpod_api_url,
        }
        if package is None:
            # The weights come from the volume's cache (the job loaded them there), with no token to ask the Hub.
            env["HF_HUB_OFFLINE"] = "1"
        else:
            env.update(LORAPOD_AWAIT_INPUT=package.name, LORAPOD_SPEC=spec.model_dump_json())
        return env

    def _secrets(self, quote: Quote) -> dict[str, str]:
        """What the pod is handed once it answers: the HF token, for a pod that downloads the base weights
        (a gated Llama model needs it); nothing for one that reads them from the volume."""
        if not quote.uploads or self.settings.hf_token is None:
            return {}
        return {"HF_TOKEN": self.settings.hf_token.get_secret_value()}

    def _url(self, pod_id: str) -> str:
        return self.settings.runpod_proxy_url.format(pod_id=pod_id, port=POD_API_PORT)

    def _answering(self, pod_id: str, idle: timedelta) -> bool:
        """Whether the pod says it is replying, or has replied within ``idle`` (a reply longer than the idle
        time, or a client whose note of its last use did not reach the ledger)."""
        token = self.tokens.load(pod_id)
        if not token:
            return False
        client = PlaygroundClient(self._url(pod_id), token)
        try:
            health = client.health()
        finally:
            client.close()
        return health is not None and (
            bool(health.get("busy")) or float(health.get("idle_s", 1e9)) < idle.total_seconds()
        )

    def _reach(self, attempt: JobAttempt) -> PodPlayground | None:
        pod_id = str(attempt.handle.get("pod_id"))
        token = self.tokens.load(pod_id)
        if not token or not self._running(pod_id):
            return None
        client = PlaygroundClient(self._url(pod_id), token)
        if client.health() is None:
            client.close()
            return None
        return PodPlayground(client, self.ledger, attempt)

    def stop(self, attempt: JobAttempt, outcome: str = STOPPED_OUTCOME) -> float:
        """Delete the playground pod and close its attempt, billed up to now; its cost."""
        pod_id = str(attempt.handle.get("pod_id"))
        self.rest.delete_pod(pod_id)
        self.tokens.forget(pod_id)
        assert attempt.id is not None
        cost, _ = attempt_store.accrue(self.ledger, attempt.id, outcome=outcome)
        log.info("playground pod %s deleted (%s): $%.4f", pod_id, outcome, cost)
        return cost

    def reap_idle(self, now: datetime | None = None) -> int:
        """Delete the playground pods unused for ``playground_idle_minutes`` (or gone by themselves), and bring
        the others' cost up to ``now``; how many remain up."""
        now = now or utcnow()
        idle = timedelta(minutes=self.settings.playground_idle_minutes)
        remaining = 0
        for attempt in open_playgrounds(self.ledger):
            last = _last_used(attempt)
            pod_id = str(attempt.handle.get("pod_id"))
            starting = _starting_until(attempt)
            # A pod still starting (an install, a download) is not idle: its opener deletes it should it fail.
            still_starting = starting is not None and now < starting
            if not still_starting and now - last >= idle and not self._answering(pod_id, idle):
                self.stop(attempt, IDLE_OUTCOME)
            elif not self._running(pod_id):
                self.stop(attempt, GONE_OUTCOME)
            else:
                assert attempt.id is not None
                attempt_store.accrue(self.ledger, attempt.id, now=now)
                remaining += 1
        return remaining


def _last_used(attempt: JobAttempt) -> datetime:
    text = (attempt.handle.get("extra") or {}).get("last_used_at")
    try:
        found = datetime.fromisoformat(str(text))
    except ValueError:
        return attempt.started_at
    return found if found.tzinfo else found.replace(tzinfo=attempt.started_at.tzinfo)


def _starting_until(attempt: JobAttempt) -> datetime | None:
    """Until when a pod that has not answered yet is left to start (None once it has)."""
    text = (attempt.handle.get("extra") or {}).get("starting_until")
    if not text:
        return None
    try:
        found = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=attempt.started_at.tzinfo)


def _job(ledger: Ledger, job_id: uuid.UUID) -> TrainingJob:
    from store.jobs import get_job

    return get_job(ledger, job_id)

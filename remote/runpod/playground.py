"""A RunPod job's playground: a pod started on demand that serves the job's adapter from its network volume.

quote (the GPU and its hourly rate, shown before anything is rented) → create the pod (its entrypoint serves
``engine.playground`` in place of a job: ``LORAPOD_PLAYGROUND=1``) → record it as an attempt of the job, so
its cost is billed in the ledger and counted by the budget → wait until it answers through RunPod's proxy.
Each prompt notes the time in the attempt's handle; the background supervisor (remote.daemon) deletes the pod
``playground_idle_minutes`` after its last use, and brings its cost up to date each round until then. A pod
whose supervisor is gone deletes itself after the job's maximum duration (its watchdog).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.config import JobSpec
from engine.pod import pod_workdir
from engine.pod_secrets import token_sha256
from remote.playground import PlaygroundClient, PlaygroundError, wait_until_healthy
from remote.provider import RunHandle
from remote.runpod.client import NoInstances, RestClient
from remote.runpod.errors import RunPodError
from remote.runpod.plan import plan_pod
from remote.runpod.pods import POD_API_PORT, PodInfo
from remote.runpod.prices import estimated_rate
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


@dataclass(frozen=True)
class Quote:
    """What a playground pod for a job would be, before it is rented."""

    job_id: uuid.UUID
    gpu: str
    rate_usd_per_hour: float
    idle_minutes: float
    reuse: JobAttempt | None  # a playground pod of this job that is already up

    def describe(self) -> str:
        if self.reuse is not None:
            return f"the job's playground pod {self.reuse.handle.get('pod_id')} is already up"
        return (
            f"a {self.gpu} pod at ${self.rate_usd_per_hour:.2f}/h, billed to job {short_id(self.job_id)} from its "
            f"start; deleted after {self.idle_minutes:g} min without use"
        )


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
        handle["extra"] = {**handle.get("extra", {}), "last_used_at": utcnow().isoformat()}
        assert self.attempt.id is not None
        attempt_store.update_handle(self.ledger, self.attempt.id, handle)
        self.attempt.handle = handle

    def close(self) -> None:
        """Let go of it here: the pod stays up for the next prompt until the supervisor finds it idle."""
        self.client.close()


class RunPodPlaygrounds:
    """Starting, reusing and deleting playground pods for RunPod jobs."""

    def __init__(self, settings: Settings, ledger: Ledger, rest: RestClient | None = None) -> None:
        key = settings.runpod_api_key.get_secret_value() if settings.runpod_api_key else ""
        if not key:
            raise PlaygroundError("a RunPod job's playground runs on a pod: set RUNPOD_API_KEY")
        self.settings = settings
        self.ledger = ledger
        self.rest = rest or RestClient(settings.runpod_api_url, key)
        self.tokens = PodTokens(settings.paths.data_dir / "pod-tokens")

    def quote(self, job: TrainingJob) -> Quote:
        """The pod a playground for ``job`` would rent, and its rate; refuses a job whose adapter is not there."""
        if job.status != JobStatus.COMPLETED:
            raise PlaygroundError(f"job {short_id(job.id)} is {job.status}: only a completed job has an adapter to try")
        spec = job_spec(job)
        if not (spec.resources.network_volume_id or self.settings.runpod_network_volume_id):
            raise PlaygroundError(
                f"job {short_id(job.id)} ran without a network volume, so its adapter left RunPod with its pod: "
                "the playground pod reads it from the volume"
            )
        if not self.settings.runpod_image:
            raise PlaygroundError("the playground pod runs lorapod's image: set runpod_image (docs/runpod.md)")
        reuse = next(iter(open_playgrounds(self.ledger, job.id)), None)
        plan = plan_pod(self.settings, spec, self.rest, hub=False)
        gpu = (plan.walk or list(spec.resources.gpu_types))[0]
        return Quote(
            job.id, gpu, estimated_rate(spec, self.settings, gpu), self.settings.playground_idle_minutes, reuse
        )

    def open(self, quote: Quote) -> PodPlayground:
        """The job's playground pod: the one already up, or a new one as quoted (billed from its creation)."""
        if quote.reuse is not None:
            session = self._reach(quote.reuse)
            if session is not None:
                return session
            self.stop(quote.reuse, GONE_OUTCOME)
        job = _job(self.ledger, quote.job_id)
        spec = job_spec(job)
        token = secrets.token_urlsafe(32)
        pod = self._create(job, spec, quote, token)
        volume = spec.resources.network_volume_id or self.settings.runpod_network_volume_id
        handle = RunHandle(
            provider="runpod", job_id=str(job.id),
            workdir=str(pod_workdir(self.settings.runpod_volume_mount_path, str(job.id))), pod_id=pod.id,
            extra={KIND: True, "gpu_type": pod.gpu or quote.gpu, "cost_per_hr": pod.cost_per_hr,
                   "network_volume_id": volume, "proxy_url": self._url(pod.id), "last_used_at": utcnow().isoformat()},
        )  # fmt: skip
        rate = pod.cost_per_hr or quote.rate_usd_per_hour
        attempt = attempt_store.start_attempt(
            self.ledger, job.id, provider="runpod", handle=handle.model_dump(), rate_usd_per_hour=rate,
            gpu_count=spec.resources.gpu_count,
        )  # fmt: skip
        self.tokens.save(pod.id, token)
        client = PlaygroundClient(self._url(pod.id), token)
        alive = lambda: self._running(pod.id)  # noqa: E731
        if not wait_until_healthy(client, self.settings.runpod_start_timeout_s, alive=alive):
            client.close()
            self.stop(attempt, "playground-failed")
            raise PlaygroundError(
                f"the playground pod {pod.id} did not answer within {self.settings.runpod_start_timeout_s:.0f} s; "
                "it has been deleted"
            )
        log.info("playground pod %s up for job %s at $%s/h", pod.id, short_id(job.id), rate)
        session = PodPlayground(client, self.ledger, attempt)
        session.touch()  # its idle time counts from when it can answer, not from its creation
        return session

    def _url(self, pod_id: str) -> str:
        return self.settings.runpod_proxy_url.format(pod_id=pod_id, port=POD_API_PORT)

    def _running(self, pod_id: str) -> bool:
        try:
            found = self.rest.get_pod(pod_id)
        except RunPodError:
            return True  # RunPod's API is busy: not known to be gone
        return found is not None and PodInfo.parse(found).desired_status not in ("EXITED", "TERMINATED")

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

    def _create(self, job: TrainingJob, spec: JobSpec, quote: Quote, token: str) -> PodInfo:
        settings = self.settings
        plan = plan_pod(settings, spec, self.rest, hub=False)
        hours = spec.resources.max_hours or settings.max_duration_hours
        env = {
            "LORAPOD_JOB_ID": str(job.id),
            "LORAPOD_PLAYGROUND": "1",
            # Only the token's hash: the pod's env is readable by anyone who can read the RunPod account.
            "LORAPOD_POD_TOKEN_SHA256": token_sha256(token),
            "LORAPOD_WORKSPACE": settings.runpod_volume_mount_path,
            "LORAPOD_MAX_SECONDS": f"{hours * 3600:.0f}",
            "LORAPOD_RUNPOD_API_URL": settings.runpod_api_url,
            "HF_HUB_OFFLINE": "1",  # the weights come from the volume's cache, with no token to ask the Hub
        }
        # No secret travels: the base model's weights are already in the volume's Hugging Face cache (the job
        # loaded them there), and the pod serves nothing that reports anywhere.
        walk = [quote.gpu, *(g for g in plan.walk if g != quote.gpu)]
        for gpu in walk:
            body: dict[str, Any] = {**plan.request(job.id, gpu, env), "name": playground_name(job.id)}
            body["ports"] = [f"{POD_API_PORT}/http"]  # reached through the proxy only
            try:
                return PodInfo.parse(self.rest.create_pod(body))
            except NoInstances:
                log.info("no capacity for a playground pod on %s", gpu)
        raise PlaygroundError(f"no GPU free for a playground pod (tried {', '.join(walk)}); try again later")

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
            if now - last >= idle and not self._answering(pod_id, idle):
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


def _job(ledger: Ledger, job_id: uuid.UUID) -> TrainingJob:
    from store.jobs import get_job

    return get_job(ledger, job_id)

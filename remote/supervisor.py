"""The supervisor: the one place that owns a job's lifecycle, from a dataset file to a finished ledger row.

validate the dataset → estimate the cost → check the budget → ledger row (queued) → launch → follow the
events into the ledger → apply status transitions → finalize (artifacts, duration and cost, error and
hint). It runs inside ``lorapod run`` / ``watch`` and inside the dashboard; two of them on one job do not
fight: a lease in the ledger lets one ingest while the others only watch what it records.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import LorapodError
from engine.artifacts import is_store_uri
from engine.checksums import sha256_file
from engine.config import DEMO_MODEL, JobSpec, diff
from engine.config import Provider as ProviderName
from engine.dataset import validate_file
from engine.limits import Limits
from remote import notices
from remote.follower import Follower, Update
from remote.local import LocalProvider
from remote.provider import ArtifactError, Provider, ProviderError, RunHandle, RunState
from store import attempts as attempt_store
from store.alerts import raise_alert
from store.artifacts import store_environment
from store.budget import (
    Decision,
    launch_limits,
    may_resume,
    may_start,
    month_spend,
    planned_limits,
)
from store.costs import Estimate, calibration, estimate
from store.db import Ledger
from store.events import list_events
from store.files import register_validated
from store.jobs import create_job, get_job, job_spec, short_id, transition
from store.models import JobAttempt, TrainingJob
from store.settings import Settings
from store.status import LIVE, TERMINAL, JobStatus

log = logging.getLogger(__name__)


class SupervisorError(LorapodError):
    """A job action that cannot be done; the message says why and what to do."""


class BudgetRefused(SupervisorError):
    def __init__(self, decision: Decision) -> None:
        super().__init__("refused by the budget: " + "; ".join(decision.reasons))
        self.decision = decision


@dataclass
class Submission:
    job: TrainingJob
    estimate: Estimate | None
    decision: Decision
    validation: dict[str, Any]


@dataclass
class Plan:
    """What a run would do: the spec as it would be recorded, its estimate, budget decision and limits, and what
    the provider would ask for (``launch``: for RunPod the create request, with env names only)."""

    spec: JobSpec
    estimate: Estimate | None
    decision: Decision
    validation: dict[str, Any]
    limits: Limits
    launch: dict[str, Any]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Supervisor:
    def __init__(self, ledger: Ledger, settings: Settings, providers: dict[str, Provider] | None = None) -> None:
        self.ledger = ledger
        self.settings = settings
        self.owner = _owner()
        self.providers = providers if providers is not None else default_providers(settings, ledger)

    def provider(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            hint = " — set RUNPOD_API_KEY (or run `runpodctl config`)" if name == ProviderName.RUNPOD else ""
            raise SupervisorError(
                f"no provider {name!r} is configured (have: {', '.join(self.providers)}){hint}"
            ) from None

    # --- starting a job -------------------------------------------------------------------------------

    def estimate_for(self, spec: JobSpec, tokens_per_epoch: int) -> Estimate | None:
        """The cost estimate of a spec on its provider (None for local runs: their rate is notional)."""
        if spec.resources.provider is ProviderName.LOCAL:
            return None
        size = spec.parameters_b()
        if size is None:
            raise SupervisorError(f"cannot tell the size of {spec.base_model!r}: set model_size_b")
        resources = spec.resources
        provider = self.providers.get(resources.provider.value)
        if provider is not None:
            try:
                provider.refresh_prices()
            except ProviderError as exc:  # the estimate falls back to the last prices known
                log.warning("live prices not refreshed: %s", exc)
        return estimate(
            tokens_per_epoch * spec.hyperparameters.num_epochs,
            size,
            resources.gpu_types[0],
            gpu_count=resources.gpu_count,
            cloud_type=resources.cloud_type.value,
            settings=self.settings,
            calibration=calibration(self.ledger),
        )

    def local_tokenizer(self, spec: JobSpec) -> Path | None:
        """The base model's tokenizer when it is on this machine (token counts are estimated otherwise)."""
        if spec.base_model == DEMO_MODEL:
            folder = self.settings.paths.models_dir / "tiny-llama"
        else:
            folder = Path(spec.base_model).expanduser()
        return folder if (folder / "tokenizer.json").is_file() else None

    def submit(self, spec: JobSpec, *, force: bool = False, parent: uuid.UUID | None = None) -> Submission:
        """Validate, estimate, check the budget and record the job as queued (not launched yet)."""
        spec, summary = self._validated(spec)
        provider = self.providers.get(spec.resources.provider.value)
        if provider is not None:  # one not configured is named at launch
            try:
                provider.preflight(spec)
            except ProviderError as exc:
                raise SupervisorError(f"refused before anything is rented: {exc}") from None
        path = Path(spec.dataset.dataset_path)
        training_file = register_validated(
            self.ledger, path, sha256=spec.dataset.dataset_sha256 or "", size_bytes=path.stat().st_size, report=summary
        )
        cost = self.estimate_for(spec, int(summary.get("tokens") or 0))
        high = cost.cost[1] if cost else 0.0
        decision = may_start(self.settings, month_spend(self.ledger), high)
        if not decision.allowed and not force:
            raise BudgetRefused(decision)
        job = create_job(
            self.ledger, spec, training_file_id=training_file.id, estimated_cost_usd=high if cost else None,
            parent_job_id=parent,
        )  # fmt: skip
        for alert in decision.alerts:
            raise_alert(self.ledger, f"budget-start:{job.id}", "budget", alert, job_id=job.id)
        return Submission(job=job, estimate=cost, decision=decision, validation=summary)

    def plan(self, spec: JobSpec) -> Plan:
        """What ``submit`` and ``launch`` would do with ``spec``, recording and renting nothing (prices are read)."""
        spec, summary = self._validated(spec)
        cost = self.estimate_for(spec, int(summary.get("tokens") or 0))
        decision = may_start(self.settings, month_spend(self.ledger), cost.cost[1] if cost else 0.0)
        limits = planned_limits(self.ledger, self.settings, spec.resources)
        launch = self.provider(spec.resources.provider.value).describe_launch(spec)
        return Plan(spec=spec, estimate=cost, decision=decision, validation=summary, limits=limits, launch=launch)

    def _validated(self, spec: JobSpec) -> tuple[JobSpec, dict[str, Any]]:
        """The spec with its dataset's digest and absolute path, and the dataset's validation summary."""
        path = Path(spec.dataset.dataset_path)
        report = validate_file(
            path, format=spec.dataset.dataset_format, mode=spec.dataset.dataset_mode,
            max_seq_length=spec.hyperparameters.max_seq_length, tokenizer=self.local_tokenizer(spec),
        )  # fmt: skip
        summary = report.to_dict()
        if not report.ok:
            raise SupervisorError(f"{path} has errors; fix them first:\n{report.format_text()}")
        digest = sha256_file(path)
        if spec.dataset.dataset_sha256 not in (None, digest):
            raise SupervisorError(f"{path} changed since the spec was made (its sha256 differs)")
        dataset = spec.dataset.model_copy(update={"dataset_sha256": digest, "dataset_path": str(path.resolve())})
        return spec.model_copy(update={"dataset": dataset}), summary

    def launch(self, job_id: uuid.UUID, *, resume: bool = False) -> JobAttempt:
        """Start the job's engine: a first launch from queued, or a resume from interrupted."""
        job = get_job(self.ledger, job_id)
        spec = job_spec(job)
        provider = self.provider(job.provider)
        limits = launch_limits(self.ledger, self.settings, job, spec.resources)
        try:
            handle = provider.launch(job.id, spec, resume=resume, limits=limits)
        except ProviderError as exc:
            transition(self.ledger, job.id, JobStatus.FAILED, error_category="launch", error_message=str(exc))
            raise SupervisorError(f"could not launch job {short_id(job.id)}: {exc}") from exc
        rate = provider.rate_usd_per_hour(handle, spec)
        gpus = spec.resources.gpu_count if job.provider != "local" else 0
        attempt = attempt_store.start_attempt(
            self.ledger,
            job.id,
            provider=job.provider,
            handle=handle.model_dump(),
            rate_usd_per_hour=rate,
            gpu_count=gpus,
        )
        where = {"pod_id": handle.pod_id or str(handle.pid), "workdir": handle.workdir}
        if handle.extra.get("gpu_type"):
            where["gpu_type"] = str(handle.extra["gpu_type"])  # the GPU actually rented
        # A resumed job's interruption is history (its attempt keeps it): the message would be stale.
        cleared = dict.fromkeys(("error_message", "error_category", "error_hint")) if resume else {}
        transition(self.ledger, job.id, JobStatus.PROVISIONING, **where, **cleared)
        return attempt

    def start(self, spec: JobSpec, *, force: bool = False, parent: uuid.UUID | None = None) -> Submission:
        submission = self.submit(spec, force=force, parent=parent)
        self.launch(submission.job.id)
        submission.job = get_job(self.ledger, submission.job.id)
        return submission

    # --- following ---------------------------------------------------------------------------------------

    def handle(self, job_id: uuid.UUID) -> tuple[JobAttempt, RunHandle] | None:
        attempt = attempt_store.current_attempt(self.ledger, job_id)
        if attempt is None:
            return None
        return attempt, RunHandle.model_validate(attempt.handle)

    def follow(
        self,
        job_id: uuid.UUID,
        *,
        on_update: Callable[[Update], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        poll: float = 0.25,
    ) -> TrainingJob:
        """Follow a job until it ends (or ``should_stop``): ingest when holding the lease, else watch."""
        job = get_job(self.ledger, job_id)
        follower = Follower(self, job, on_update, poll)
        try:
            while not should_stop():
                job = follower.round()
                if job.status in TERMINAL and follower.drained:
                    break
                if job.status == JobStatus.INTERRUPTED and follower.drained:
                    break  # nothing runs until someone resumes it (auto-resume has already relaunched it)
                if job.status == JobStatus.QUEUED and follower.idle_without_run():
                    break
        finally:
            follower.close()
        return get_job(self.ledger, job_id)

    def catch_up(self, job_ids: Iterable[uuid.UUID]) -> None:
        """Bring live jobs' ledger rows up to date once (events since the cursor; a lost process noticed)."""
        for job_id in job_ids:
            job = get_job(self.ledger, job_id)
            if job.status not in LIVE:
                continue
            if job.provider not in self.providers:
                log.warning(
                    "job %s runs on %s, which is not configured here; not followed", short_id(job.id), job.provider
                )
                continue
            follower = Follower(self, job, None, 0.0)
            try:
                if follower.supervising:
                    follower.round()
            finally:
                follower.close()

    # --- actions ---------------------------------------------------------------------------------------

    def cancel(self, job_id: uuid.UUID, reason: str = "cancelled by the user") -> TrainingJob:
        """Ask a running job to checkpoint and stop; a job with no run (queued, interrupted) ends at once."""
        job = get_job(self.ledger, job_id)
        if job.status in TERMINAL:
            raise SupervisorError(f"job {short_id(job.id)} is already {job.status}")
        current = self.handle(job.id)
        if job.status in (JobStatus.QUEUED, JobStatus.INTERRUPTED) or current is None:
            return transition(self.ledger, job.id, JobStatus.CANCELLED, error_message=reason)
        _, handle = current
        provider = self.provider(job.provider)
        if provider.state(handle) is not RunState.RUNNING:  # no engine left to checkpoint: it ends here
            return transition(self.ledger, job.id, JobStatus.CANCELLED, error_message=reason)
        provider.cancel(handle, reason)
        return job

    def resume(self, job_id: uuid.UUID, *, force: bool = False) -> JobAttempt:
        """Restart an interrupted job from its newest checkpoint, on the same workdir, under the budget rules
        of a start (BudgetRefused unless ``force``)."""
        job = get_job(self.ledger, job_id)
        if job.status != JobStatus.INTERRUPTED:
            raise SupervisorError(
                f"job {short_id(job.id)} is {job.status}: only an interrupted job resumes "
                "(a failed one is retried with `lorapod retry`)"
            )
        current = self.handle(job.id)
        if current is not None and self.provider(job.provider).state(current[1]) is RunState.RUNNING:
            raise SupervisorError(f"job {short_id(job.id)} is still running; `lorapod watch` it instead")
        decision = may_resume(self.ledger, self.settings, job)
        if not decision.allowed and not force:
            raise BudgetRefused(decision)
        return self.launch(job.id, resume=True)

    def auto_resume(self, job_id: uuid.UUID, attempts: int) -> JobAttempt | None:
        """Resume an interrupted job by itself when the settings ask for it, under exactly the rules of a
        start (the per-job ceiling, the monthly budget with running jobs, max_resume_attempts)."""
        settings = self.settings
        job = get_job(self.ledger, job_id)
        if not settings.auto_resume or job.status != JobStatus.INTERRUPTED:
            return None
        if attempts >= settings.max_resume_attempts:
            log.warning("job %s: not resumed, it had its %d attempts (setting max_resume_attempts)",
                        short_id(job.id), attempts)  # fmt: skip
            return None
        decision = may_resume(self.ledger, settings, job)
        if not decision.allowed:
            reason = "; ".join(decision.reasons)
            log.warning("job %s: not resumed: %s", short_id(job.id), reason)
            raise_alert(self.ledger, f"resume-refused:{job.id}:{attempts}", "budget",
                        f"job {short_id(job.id)} was not resumed: {reason}", job_id=job.id)  # fmt: skip
            return None
        log.info("auto-resuming job %s (attempt %d)", short_id(job.id), attempts + 1)
        try:
            attempt = self.launch(job.id, resume=True)
        except SupervisorError as exc:
            log.error("%s", exc)
            return None
        notices.on_job(self.ledger, settings, job.id, "resumed", attempt=attempt.number)
        return attempt

    def retry_spec(self, job_id: uuid.UUID, *, suggested: bool) -> tuple[JobSpec, list[Any]]:
        """The spec a retry would run (the same, or with the failure's suggested values) and its diff."""
        job = get_job(self.ledger, job_id)
        old = job_spec(job)
        changes: dict[str, Any] = {}
        if suggested:
            errors = list_events(self.ledger, job.id, types=["error"])
            changes = dict(errors[-1].payload.get("suggested") or {}) if errors else {}
            if not changes:
                raise SupervisorError(f"job {short_id(job.id)} has no suggested values; retry it as it was")
        from engine.config import apply_overrides, validate_spec

        data = old.model_dump(mode="json")
        data.update(job_id=None)
        overrides = [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in changes.items()]
        new = validate_spec(apply_overrides(data, overrides))
        # The job id is the ledger's, not a setting: a retry always gets its own.
        return new, diff(old.model_copy(update={"job_id": None}), new)

    def retry(self, job_id: uuid.UUID | str, *, suggested: bool, force: bool = False) -> Submission:
        job = get_job(self.ledger, job_id)
        if job.status not in TERMINAL:
            raise SupervisorError("only a finished job can be retried (cancel it first)")
        spec, _ = self.retry_spec(job.id, suggested=suggested)
        return self.start(spec, force=force, parent=job.id)

    def download(self, job_id: uuid.UUID, kind: str, dest: Path) -> Path:
        """Copy a job's package into ``dest``, checking the sha256 the ledger recorded and the zip's manifest."""
        from engine.packaging import verify_package
        from store.artifacts import list_artifacts

        job = get_job(self.ledger, job_id)
        artifacts = list_artifacts(self.ledger, job.id, kind)
        if not artifacts:
            raise SupervisorError(f"job {short_id(job.id)} has no {kind} package (status: {job.status})")
        artifact = artifacts[-1]
        if is_store_uri(artifact.storage_path):  # uploaded: from the artifact store, wherever the job ran
            from store.artifacts import artifact_store

            store = artifact_store(self.settings, artifact.storage_path)
            target = store.download(artifact.storage_path, dest, sha256=artifact.sha256)
        else:
            current = self.handle(job.id)
            if current is None:
                raise SupervisorError(f"job {short_id(job.id)} never ran")
            _, handle = current
            target = self.provider(job.provider).fetch_artifact(
                handle, Path(artifact.storage_path).name, dest, sha256=artifact.sha256
            )
        problems = verify_package(target)
        if problems:
            raise ArtifactError(f"{target.name} does not verify: {'; '.join(problems[:3])}")
        return target


def default_providers(settings: Settings, ledger: Ledger | None = None) -> dict[str, Provider]:
    """The providers this installation can use: local always; RunPod once its API key is set (and a ledger
    keeps the pods' pinned SSH host keys)."""
    paths = settings.paths
    secrets = {
        name: value.get_secret_value()
        for name in ("hf_token", "training_webhook_secret")
        if (value := getattr(settings, name)) is not None
    }
    providers: dict[str, Provider] = {
        "local": LocalProvider(
            paths.jobs_dir,
            paths.models_dir,
            rate_usd_per_hour=settings.local_rate_usd_per_hour,
            secrets=secrets,
            artifact_env=lambda: store_environment(settings),
        )
    }
    if settings.runpod_api_key is not None and ledger is not None:
        from remote.runpod import RunPodProvider
        from store.host_keys import HostKeyStore

        providers["runpod"] = RunPodProvider(settings, HostKeyStore(ledger))
    return providers


__all__ = ["BudgetRefused", "Submission", "Supervisor", "SupervisorError", "Update"]

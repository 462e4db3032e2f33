"""Everything the dashboard reads or does, as plain functions over store/ and remote/ — called from workers.

Screens never touch SQL, HTTP or SSH: they call these methods inside ``@work(thread=True)`` workers and get
back plain objects. The clock is injectable so that screens render the same for tests and snapshots.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine.config import FieldChange, JobSpec, diff
from engine.events import ErrorEvent, EvalEvent
from store.alerts import acknowledge, list_alerts
from store.artifacts import list_artifacts
from store.attempts import list_attempts
from store.budget import MonthSpend, month_alerts, month_spend, monthly_totals
from store.errors import StoreError
from store.events import list_events, typed_event
from store.files import FileState, checked_files, list_files
from store.jobs import JobPage, JobQuery, get_job, job_spec, list_jobs, short_id
from store.metrics import metrics_history
from store.models import Alert, JobEvent, ModelArtifact, TrainingFile, TrainingJob, TrainingMetric, utcnow
from store.recovery import open_ledger
from store.settings import Settings, load_settings, write_setting
from store.status import LIVE

Typed = TypeVar("Typed", EvalEvent, ErrorEvent)

if TYPE_CHECKING:
    from remote.playground import Session
    from remote.runpod.playground import Quote
    from remote.supervisor import Submission, Supervisor, Update
    from store.costs import Estimate


@dataclass
class Summary:
    """The jobs screen's summary bar."""

    active: int
    month: MonthSpend
    budget: float
    alerts: list[Alert]
    month_alerts: list[str]
    sync: SyncState | None = None  # None: no SUPABASE_DB_URL, nothing to show


@dataclass
class SyncState:
    """How the dashboard's background sync with Supabase's Postgres stands."""

    last_synced: datetime | None = None
    sent: int = 0
    received: int = 0
    problem: str | None = None  # the last attempt's failure, cleared by the next success


@dataclass
class JobDetail:
    """One job as the monitor shows it."""

    job: TrainingJob
    spec: JobSpec | None
    metrics: list[TrainingMetric]
    events: list[JobEvent]
    artifacts: list[ModelArtifact]
    attempts: list[Any]
    evaluation: EvalEvent | None = None  # the latest
    error: ErrorEvent | None = None  # the latest


@dataclass
class DatasetInspection:
    report: dict[str, Any]
    report_text: str
    stats: dict[str, Any] | None
    preview: Any  # engine.dataset.preview.Preview


class Backend:
    """The dashboard's only door to the ledger, the settings and the supervisor."""

    def __init__(self, settings: Settings | None = None, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings or load_settings()
        self.ledger = open_ledger(self.settings.paths)  # an emptied ledger is rebuilt, with an alert
        self.clock = clock
        self._supervisor: Supervisor | None = None
        self._lock = threading.Lock()
        self.sync_state = SyncState() if self.settings.supabase_db_url is not None else None

    @property
    def supervisor(self) -> Supervisor:
        with self._lock:
            if self._supervisor is None:
                from remote.supervisor import Supervisor

                self._supervisor = Supervisor(self.ledger, self.settings)
            return self._supervisor

    # --- jobs ------------------------------------------------------------------------------------------

    def jobs(self, query: JobQuery) -> JobPage:
        return list_jobs(self.ledger, query)

    def job(self, job_id: Any) -> TrainingJob:
        return get_job(self.ledger, job_id)

    def artifacts(self, job_id: Any) -> list[ModelArtifact]:
        return list_artifacts(self.ledger, job_id)

    def retry_choice(self, job_id: Any) -> tuple[TrainingJob, bool]:
        """A job to retry, and whether its last error suggested other values (its events are not all read)."""
        job = get_job(self.ledger, job_id)
        error = self._latest(job.id, ErrorEvent)
        return job, bool(error and error.suggested)

    def _latest(self, job_id: Any, kind: type[Typed]) -> Typed | None:
        """A job's latest event of one type, typed."""
        kind_name = kind.model_fields["type"].default
        rows = list_events(self.ledger, job_id, types=[kind_name])
        latest = typed_event(rows[-1]) if rows else None
        return latest if isinstance(latest, kind) else None

    def summary(self) -> Summary:
        month = month_spend(self.ledger, self.clock())
        return Summary(
            active=month.active_jobs,
            month=month,
            budget=self.settings.monthly_budget_usd,
            alerts=list_alerts(self.ledger),
            month_alerts=month_alerts(self.settings, month),
            sync=self.sync_state,
        )

    # --- sync with Supabase -----------------------------------------------------------------------------

    def sync(self) -> SyncState:
        """Push then pull once; a failure is kept in the state (local work goes on), never raised."""
        from store.errors import SyncError
        from store.sync import sync

        state = self.sync_state
        url = self.settings.supabase_db_url
        if state is None or url is None:
            raise RuntimeError("sync needs SUPABASE_DB_URL")  # callers check sync_state first
        try:
            report = sync(self.ledger, url.get_secret_value(), owner=self.settings.supabase_user_id)
        except SyncError as exc:
            state.problem = str(exc)
        else:
            state.last_synced, state.sent, state.received, state.problem = (
                self.clock(),
                report.sent,
                report.received,
                None,
            )
        return state

    def models_and_files(self) -> tuple[list[str], list[TrainingFile]]:
        """Filter choices: base models seen in the ledger, and registered training files."""
        models = sorted({row.base_model for row in list_jobs(self.ledger, JobQuery(limit=2000)).jobs})
        return models, list_files(self.ledger)

    def detail(self, job_id: Any, *, after_seq: int = 0, after_step: int | None = None) -> JobDetail:
        """A job with its events after ``after_seq`` and metrics after ``after_step`` (all by default)."""
        job = get_job(self.ledger, job_id)
        events = list_events(self.ledger, job.id, after_seq=after_seq)
        try:
            spec: JobSpec | None = job_spec(job)
        except ValueError:  # a row from before lorapod recorded full specs
            spec = None
        return JobDetail(
            job=job,
            spec=spec,
            metrics=metrics_history(self.ledger, job.id, after_step=after_step),
            events=events,
            artifacts=list_artifacts(self.ledger, job.id),
            attempts=list_attempts(self.ledger, job.id),
            evaluation=self._latest(job.id, EvalEvent),
            error=self._latest(job.id, ErrorEvent),
        )

    def active_job_ids(self) -> list[Any]:
        return [row.id for row in list_jobs(self.ledger, JobQuery(group="active", limit=200)).jobs]

    def followable_job_ids(self) -> list[Any]:
        """Live jobs with a run to follow, on providers this installation has."""
        providers = self.supervisor.providers
        rows = list_jobs(self.ledger, JobQuery(group="active", limit=200)).jobs
        return [row.id for row in rows if row.provider in providers and row.status not in ("queued", "interrupted")]

    # --- actions ---------------------------------------------------------------------------------------

    def start(self, spec: JobSpec) -> Submission:
        return self.supervisor.start(spec)

    def cancel(self, job_id: Any, reason: str = "cancelled from the dashboard") -> TrainingJob:
        return self.supervisor.cancel(job_id, reason)

    def resume(self, job_id: Any) -> TrainingJob:
        """Restart an interrupted job from its newest checkpoint (BudgetRefused when the budget says no)."""
        self.supervisor.resume(job_id)
        return get_job(self.ledger, job_id)

    def retry_plan(self, job_id: Any, *, suggested: bool) -> tuple[JobSpec, list[FieldChange]]:
        return self.supervisor.retry_spec(job_id, suggested=suggested)

    def retry(self, job_id: Any, *, suggested: bool) -> Submission:
        return self.supervisor.retry(job_id, suggested=suggested)

    def download(self, job_id: Any, kind: str, dest: Path) -> Path:
        return self.supervisor.download(job_id, kind, dest)

    def follow(self, job_id: Any, on_update: Callable[[Update], None], should_stop: Callable[[], bool]) -> None:
        self.supervisor.follow(job_id, on_update=on_update, should_stop=should_stop)

    def catch_up(self) -> None:
        self.supervisor.catch_up(self.active_job_ids())

    def take_alerts(self) -> list[Alert]:
        """Unseen alerts, marked seen (each is shown once, as a toast)."""
        alerts = list_alerts(self.ledger)
        if alerts:
            acknowledge(self.ledger, [a.id for a in alerts if a.id is not None])
        return alerts

    def export_metrics(self, job_id: Any, path: Path) -> int:
        """Write a job's metrics history as CSV (or JSON for a .json path); returns the rows written."""
        import csv
        import json

        from store.metrics import METRIC_FIELDS

        rows = [
            {"step": m.step, **{f: getattr(m, f) for f in METRIC_FIELDS}, "recorded_at": m.recorded_at.isoformat()}
            for m in metrics_history(self.ledger, get_job(self.ledger, job_id).id)
        ]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".json":
                path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
            else:
                with path.open("w", newline="", encoding="utf-8") as handle:
                    writer = csv.DictWriter(handle, fieldnames=["step", *METRIC_FIELDS, "recorded_at"])
                    writer.writeheader()
                    writer.writerows(rows)
        except OSError as exc:  # a folder that is a file, or that cannot be written: said in words
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return len(rows)

    def rating_session(self, job_id: Any, rater: str) -> tuple[TrainingJob, list[dict[str, Any]], set[int], Any]:
        """What the Rate screen opens with: the job, its held-out pairs, the prompts ``rater`` has rated, the tally."""
        from store.ratings import held_out_pairs, human_summary, rated_by

        job = self.job(job_id)
        pairs = held_out_pairs(self.ledger, job.id)
        return job, pairs, rated_by(self.ledger, job.id, rater), human_summary(self.ledger, job.id)

    def rate(self, job_id: Any, index: int, rater: str, choice: str, label: str) -> Any:
        """Record one rating; the job's tally after it."""
        from store.ratings import human_summary, record_rating
        from tui.cli.evaluate import update_eval_json

        job = self.job(job_id)
        record_rating(self.ledger, job.id, index, rater, choice, label)
        summary = human_summary(self.ledger, job.id)
        update_eval_json(job, "human", summary)
        return summary

    def report(self, job_ids: list[Any]) -> Path:
        """Write the client report of ``job_ids`` (one, or several compared) into the reports folder."""
        from store.report import build_report, report_name

        jobs = [get_job(self.ledger, job_id) for job_id in job_ids]
        target = self.settings.paths.reports_dir / report_name([short_id(job.id) for job in jobs])
        return build_report(self.ledger, [str(job.id) for job in jobs], target)

    def compare(self, job_ids: list[Any]) -> list[JobDetail]:
        return [self.detail(job_id) for job_id in job_ids]

    @staticmethod
    def config_diff(specs: list[JobSpec]) -> dict[str, list[Any]]:
        """Fields whose values differ between any of the specs, with each spec's value."""
        from engine.config import flatten

        names: dict[str, None] = {}
        for other in specs[1:]:
            for change in diff(specs[0], other):
                if change.field not in ("job_id", "name", "dataset_sha256"):
                    names.setdefault(change.field, None)
        flat = [flatten(spec) for spec in specs]
        return {name: [values.get(name) for values in flat] for name in names}

    # --- the playground ------------------------------------------------------------------------------

    def playground_quote(self, job_id: Any) -> Quote | None:
        """What trying the job's adapter would rent (None: a local job, nothing to pay)."""
        from remote.playground import quote_session

        return quote_session(self.settings, self.ledger, self.job(job_id))

    def open_playground(self, job_id: Any, quote: Quote | None) -> Session:
        from remote.playground import open_session

        return open_session(self.settings, self.ledger, self.job(job_id), quote)

    # --- costs and datasets --------------------------------------------------------------------------

    def inspect_dataset(self, path: Path, spec: JobSpec) -> DatasetInspection:
        """Validation report, statistics and a preview of the first example, as the spec would train it."""
        from engine.dataset import ChatTokenizer, ConvertOptions, prepare
        from engine.dataset.preview import preview_example
        from engine.dataset.stats import dataset_stats

        options = ConvertOptions.from_spec(spec.dataset, spec.hyperparameters.max_seq_length)
        folder = self.supervisor.local_tokenizer(spec)
        tokenizer = ChatTokenizer.load(folder) if folder is not None else None
        prepared = prepare(path, options, tokenizer=tokenizer)
        if not prepared.report.ok or not prepared.examples:
            return DatasetInspection(prepared.report.to_dict(), prepared.report.format_text(), None, None)
        stats = dataset_stats(prepared, spec.hyperparameters, spec.resources.gpu_count)
        preview = preview_example(prepared.examples[0], tokenizer)
        return DatasetInspection(prepared.report.to_dict(), prepared.report.format_text(), stats.to_dict(), preview)

    def costs(self) -> tuple[MonthSpend, list[dict[str, Any]], JobPage]:
        from datetime import timedelta

        from store.budget import month_bounds

        start, _ = month_bounds(self.clock())
        jobs = list_jobs(self.ledger, JobQuery(sort="cost", limit=200, created_from=start - timedelta(days=1)))
        return month_spend(self.ledger, self.clock()), monthly_totals(self.ledger, 12), jobs

    def save_setting(self, name: str, value: str) -> None:
        write_setting(name, value)
        self.settings = load_settings()
        with self._lock:
            self._supervisor = None

    def datasets(self) -> list[tuple[TrainingFile, FileState]]:
        """Every registered file, with whether its bytes changed since (reads the files: from a worker)."""
        return checked_files(self.ledger)

    def estimate(self, spec: JobSpec, tokens_per_epoch: int) -> Estimate | None:
        return self.supervisor.estimate_for(spec, tokens_per_epoch)

    def local_estimate(self, spec: JobSpec, tokens_per_epoch: int) -> str:
        """How long a local run should take, from the speed earlier local runs of its model reached here (the
        median of their last tokens/s), and its notional cost; says so when there is nothing to go on."""
        import statistics

        rate = self.settings.local_rate_usd_per_hour
        rows = list_jobs(self.ledger, JobQuery(group="completed", base_model=spec.base_model, limit=20)).jobs
        speeds = []
        for row in (r for r in rows if r.provider == "local"):
            measured = [m.tokens_per_second for m in metrics_history(self.ledger, row.id) if m.tokens_per_second]
            if measured:
                speeds.append(measured[-1])
        if not speeds or not tokens_per_epoch:
            return (
                f"no local run of {spec.base_model} has finished here yet to measure this machine's speed; "
                f"the first one sets the estimate (notional rate ${rate:,.2f}/h)"
            )
        speed = statistics.median(speeds)
        seconds = tokens_per_epoch * spec.hyperparameters.num_epochs / speed
        minutes = seconds / 60
        took = f"{minutes:.0f} min" if minutes >= 1 else f"{seconds:.0f} s"
        return (
            f"about {took} of training at {speed:,.0f} tokens/s (the median of {len(speeds)} earlier local "
            f"run(s) of this model), ${seconds / 3600 * rate:,.2f} at the notional ${rate:,.2f}/h"
        )

    def launch_plan(self, spec: JobSpec) -> dict[str, Any] | None:
        """What a RunPod launch of ``spec`` would ask for, renting nothing; None for a local job. A RunPod that
        cannot be asked is a problem in the plan, not an error."""
        if spec.resources.provider.value == "local":
            return None
        from remote.provider import ProviderError
        from remote.supervisor import SupervisorError

        try:
            return self.supervisor.provider(spec.resources.provider.value).describe_launch(spec)
        except (ProviderError, SupervisorError) as exc:  # no API key, or RunPod unreachable
            return {"problems": [str(exc)]}

    def month(self) -> MonthSpend:
        return month_spend(self.ledger, self.clock())

    def is_live(self, job: TrainingJob) -> bool:
        return job.status in LIVE

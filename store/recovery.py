"""Opening the installation's ledger, and rebuilding it from the job folders when it was emptied or lost.

A local job's folder (``engine.workdir``) holds the spec it ran and every event its engine wrote, so a ledger
file found empty (0 bytes), or a ledger with no jobs beside folders that hold some, is rebuilt: each job with
its status, progress, metrics, error, evaluation, artifacts, attempts and their costs (from the engine's cost
events), and its training file when the dataset is still in place. An empty file is kept aside, never deleted.
What only the ledger held is not in the folders: cost estimates, retry links, alerts and RunPod jobs, whose
folders here hold only their packages and log.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlmodel import col, select

from engine.checksums import sha256_file
from engine.config import JobSpec, Provider
from engine.events import Stage, read_events
from engine.workdir import Workdir
from store.alerts import raise_alert
from store.db import Ledger, ledger_lock
from store.errors import StoreError
from store.events import EventRecord
from store.files import register_validated
from store.ingest import ingest
from store.jobs import create_job, get_job, short_id, transition
from store.models import Alert, JobAttempt, TrainingJob
from store.settings import Paths
from store.status import TERMINAL, JobStatus

ALERT_KIND = "ledger"
# A 0-byte ledger this recent may be another process creating it (SQLite writes its header at once): not emptied.
_FRESH_SECONDS = 5.0


class _Unusable(Exception):
    """A job folder that cannot be rebuilt from; the message says why."""


def open_ledger(paths: Paths) -> Ledger:
    """The installation's ledger; ``recovery`` on it says what opening it had to repair (None: nothing)."""
    kept = _set_aside_if_emptied(paths.ledger, paths.jobs_dir)
    existed = paths.ledger.exists()
    ledger = Ledger(paths.ledger)
    problem = f"the ledger {paths.ledger} was empty (0 bytes): kept aside as {kept.name}" if kept else None
    # Most opens stop at the first test: the ledger has jobs.
    if not _has_jobs(ledger) and (kept or not _was_rebuilt(ledger)) and (folders := _job_folders(paths.jobs_dir)):
        with ledger.exclusive():
            if _has_jobs(ledger):  # another process rebuilt it meanwhile
                return ledger
            found = f"the ledger {paths.ledger} held no jobs" if existed else f"there was no ledger at {paths.ledger}"
            problem = problem or found
            problem += "; " + _summary(*rebuild(ledger, folders), paths.jobs_dir)
    elif problem:
        problem += f"; no job folder in {paths.jobs_dir} to rebuild its jobs from"
    if problem:
        raise_alert(ledger, f"{ALERT_KIND}:{_stamp()}", ALERT_KIND, problem)
    ledger.recovery = problem
    return ledger


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _job_folders(jobs_dir: Path) -> list[Path]:
    try:
        return sorted(p for p in jobs_dir.iterdir() if p.is_dir() and _is_uuid(p.name))
    except OSError:
        return []


def _is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def _set_aside_if_emptied(path: Path, jobs_dir: Path) -> Path | None:
    """Rename a 0-byte ledger (with its WAL files) to ``<name>.empty-<time>``; its new name, or None."""
    if not path.exists():
        return None
    with ledger_lock(path):
        try:
            status = path.stat()
        except FileNotFoundError:
            return None
        fresh = datetime.now(UTC).timestamp() - status.st_mtime < _FRESH_SECONDS
        if status.st_size or (fresh and not _job_folders(jobs_dir)):
            return None
        kept = path.with_name(f"{path.name}.empty-{_stamp()}")
        for suffix in ("-wal", "-shm"):  # a stale WAL would otherwise be read into the new ledger
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.rename(kept.with_name(kept.name + suffix))
        path.rename(kept)
        return kept


def _has_jobs(ledger: Ledger) -> bool:
    with ledger.read() as session:
        return session.exec(select(TrainingJob.id).limit(1)).first() is not None


def _was_rebuilt(ledger: Ledger) -> bool:
    """True once a rebuild was tried: a folder that cannot be rebuilt from is not tried (and said) every time."""
    with ledger.read() as session:
        return session.exec(select(Alert.id).where(col(Alert.kind) == ALERT_KIND).limit(1)).first() is not None


def _summary(rebuilt: list[TrainingJob], skipped: list[str], jobs_dir: Path) -> str:
    jobs = ", ".join(f"{short_id(job.id)} {job.status}" for job in rebuilt)
    text = f"rebuilt {len(rebuilt)} job{'' if len(rebuilt) == 1 else 's'} from their folders in {jobs_dir}"
    text += f" ({jobs})" if jobs else ""
    if skipped:
        text += "; not rebuilt: " + ", ".join(skipped)
    return text + ". Not in the folders, so not rebuilt: cost estimates, retry links and alerts"


def rebuild(ledger: Ledger, folders: list[Path]) -> tuple[list[TrainingJob], list[str]]:
    """Each job folder's job, from its spec and events; the jobs rebuilt, and why the others were not."""
    rebuilt, skipped = [], []
    for folder in folders:
        try:
            rebuilt.append(_rebuild_job(ledger, Workdir(folder)))
        except (_Unusable, StoreError) as exc:
            skipped.append(f"{folder.name[:8]} ({exc})")
    return rebuilt, skipped


def _read_spec(workdir: Workdir) -> tuple[JobSpec, Path]:
    # The spec as launched (control/), else as the engine last ran it.
    for path in (workdir.root / "control" / "spec.json", workdir.spec):
        try:
            spec = JobSpec.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            continue
        except (OSError, ValidationError) as exc:
            raise _Unusable(f"{path.name} cannot be read: {str(exc).splitlines()[0]}") from None
        if spec.job_id is None or uuid.UUID(spec.job_id) != uuid.UUID(workdir.root.name):
            raise _Unusable(f"{path} is the spec of another job ({spec.job_id})")
        return spec, path
    raise _Unusable("no spec.json: a RunPod job's folder holds only its packages and log")


def _runs(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The events of each engine run: a resumed job's engine starts again at preprocessing."""
    runs: list[list[dict[str, Any]]] = [[]]
    for event in events:
        if event.get("type") == "stage" and event.get("stage") == Stage.PREPROCESSING and runs[-1]:
            runs.append([])
        runs[-1].append(event)
    return runs


def _rebuild_job(ledger: Ledger, workdir: Workdir) -> TrainingJob:
    spec, spec_file = _read_spec(workdir)
    events = [event for _, event in read_events(workdir.events)]
    runs = _runs(events)
    times = [EventRecord.from_line(e).ts for e in events]
    created = min([datetime.fromtimestamp(spec_file.stat().st_mtime, UTC), *times])
    job = create_job(ledger, spec)
    local = spec.resources.provider is Provider.LOCAL
    attempts = []
    for number, run in enumerate(runs, start=1):
        run_times = [EventRecord.from_line(e).ts for e in run] or [created]
        if get_job(ledger, job.id).status in (JobStatus.QUEUED, JobStatus.INTERRUPTED):  # a launch, as it was
            transition(ledger, job.id, JobStatus.PROVISIONING, workdir=str(workdir.root), started_at=run_times[0])
        ingest(ledger, job.id, run)
        status = get_job(ledger, job.id).status
        running = number == len(runs) and local and workdir.running_pid() is not None
        if status not in TERMINAL and not running:  # its engine is gone, as a supervisor would have noticed
            transition(ledger, job.id, JobStatus.INTERRUPTED)
            status = JobStatus.INTERRUPTED
        costs = [e for e in run if e.get("type") == "cost"]
        attempts.append(
            JobAttempt(
                job_id=job.id,
                number=number,
                provider=spec.resources.provider.value,
                handle={
                    "provider": spec.resources.provider.value,
                    "job_id": str(job.id),
                    "workdir": str(workdir.root),
                    "pid": workdir.running_pid() if running else None,
                    "pod_id": None,
                    "extra": {},
                },
                rate_usd_per_hour=float(costs[-1]["rate_usd_per_hour"]) if costs else 0.0,
                gpu_count=0 if local else spec.resources.gpu_count,
                started_at=run_times[0],
                ended_at=None if running else run_times[-1],
                cost_usd=float(costs[-1]["cost_usd"]) if costs else 0.0,
                outcome=None if running else status,
            )
        )
    training_file = _register_dataset(ledger, spec)
    with ledger.write() as session:
        row = session.get(TrainingJob, job.id)
        assert row is not None
        row.created_at = created
        row.training_file_id = training_file
        row.actual_cost_usd = round(sum(a.cost_usd for a in attempts), 6)
        row.gpu_hours = round(
            sum(((a.ended_at or a.started_at) - a.started_at).total_seconds() / 3600 * a.gpu_count for a in attempts),
            6,
        )
        session.add_all([row, *attempts])
    return get_job(ledger, job.id)


def _register_dataset(ledger: Ledger, spec: JobSpec) -> uuid.UUID | None:
    """The job's training file, registered again when the dataset is still there, unchanged."""
    # Imported here: every command opens the ledger, and only a rebuild needs the dataset code.
    from engine.dataset import DatasetError, validate_file

    path = Path(spec.dataset.dataset_path)
    try:
        if not path.is_file() or sha256_file(path) != spec.dataset.dataset_sha256:
            return None
        report = validate_file(
            path,
            format=spec.dataset.dataset_format,
            mode=spec.dataset.dataset_mode,
            max_seq_length=spec.hyperparameters.max_seq_length,
        )
    except (OSError, DatasetError):
        return None
    sha256, size = spec.dataset.dataset_sha256, path.stat().st_size
    return register_validated(ledger, path, sha256=sha256, size_bytes=size, report=report.to_dict()).id

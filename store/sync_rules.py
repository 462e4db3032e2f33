"""How rows merge when sync meets them on the other side: one upsert per table, the same rules both ways.

Each statement is built for the dialect it runs on (Postgres when pushing, the SQLite ledger when pulling)
from one definition, so both sides resolve a conflict identically and converge:

- **training_jobs**: a terminal status never regresses — a terminal status beats a live one whatever its
  time, and between two different terminal ones completed > failed > cancelled; otherwise the row with the
  newest ``updated_at`` wins. The status travels with its stage, ``completed_at`` and error. Counters that only
  grow (step, epoch, cost, GPU-hours, event cursor) take the larger value; references (dataset, parent,
  owner, adapter path) are filled in, never unset. The lease columns are this machine's own: never sent,
  never overwritten by a pull.
- **job_attempts** (by job and number): the attempt further along (ended, then costlier) wins. A pod API token
  in a handle (where attempts recorded before tokens moved to the data dir keep one) never travels.
- **model_artifacts** (by id): values fill in; a storage URI is never replaced by a local path.
- **training_metrics_history** (by job and step): append-only — a step keeps its values and gains missing ones.
- **job_events** (by job and seq): append-only — an event already there is left as it is.
- **ratings** (by job, prompt and rater): the newest ``updated_at`` wins (a rater who rates again changes
  their mind); the first row's id stays.
- **training_files** (by id): the newest ``updated_at`` wins; a file already known under another id is skipped.
  (The web app owns that table; a pull fetches the files its jobs refer to.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from store.metrics import METRIC_FIELDS
from store.models import (
    JobAttempt,
    JobEvent,
    ModelArtifact,
    Rating,
    SyncState,
    TrainingFile,
    TrainingJob,
    TrainingMetric,
)

JOBS: sa.Table = TrainingJob.__table__  # type: ignore[attr-defined]
FILES: sa.Table = TrainingFile.__table__  # type: ignore[attr-defined]
ATTEMPTS: sa.Table = JobAttempt.__table__  # type: ignore[attr-defined]
ARTIFACTS: sa.Table = ModelArtifact.__table__  # type: ignore[attr-defined]
METRICS: sa.Table = TrainingMetric.__table__  # type: ignore[attr-defined]
EVENTS: sa.Table = JobEvent.__table__  # type: ignore[attr-defined]
SYNC_STATE: sa.Table = SyncState.__table__  # type: ignore[attr-defined]
RATINGS: sa.Table = Rating.__table__  # type: ignore[attr-defined]

TERMINAL_RANK = {"completed": 3, "failed": 2, "cancelled": 1}
STATUS_BUNDLE = frozenset({"status", "stage", "completed_at", "error_message", "error_category", "error_hint"})
GROWING = frozenset({"current_step", "current_epoch", "actual_cost_usd", "gpu_hours", "last_event_seq", "updated_at"})
FILLED = frozenset({"training_file_id", "parent_job_id", "created_by", "lora_artifact_path", "started_at"})
KEPT = frozenset({"id", "created_at"})
LEASE = ("lease_owner", "lease_expires_at")
# A pulled job that is still live runs under another ledger: this lease keeps local supervisors watching it.
REMOTE_LEASE = "sync:remote"

# Keys of an attempt handle's ``extra`` that stay in this ledger: a pod API token lets whoever holds it drive the pod.
LOCAL_HANDLE_KEYS = frozenset({"pod_token"})
JOB_COLUMNS = tuple(c.name for c in JOBS.columns if c.name not in LEASE)
# Tables whose local integer id is the ledger's own: rows travel without it, matched by their natural key.
LOCAL_IDS = {"job_attempts": ("job_id", "number"), "training_metrics_history": ("job_id", "step"),
             "job_events": ("job_id", "seq")}  # fmt: skip


def _insert(dialect: str, table: sa.Table) -> Any:
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def _greatest(dialect: str, a: Any, b: Any) -> Any:
    return sa.func.greatest(a, b) if dialect == "postgresql" else sa.func.max(a, b)


def terminal_rank(status: Any) -> Any:
    """0 for a live status, else the terminal status's precedence (SQL expression)."""
    return sa.case(TERMINAL_RANK, value=status, else_=0)


def remote_jobs_table() -> sa.Table:
    """training_jobs as Postgres has it: ``created_by`` is a uuid there (an auth.users id), text in the ledger."""
    table = JOBS.to_metadata(sa.MetaData())
    table.c.created_by.type = sa.Uuid(as_uuid=False)
    return table


def synced_columns(table: sa.Table) -> list[str]:
    """The columns a row of ``table`` carries between ledger and Postgres."""
    if table is JOBS:
        return list(JOB_COLUMNS)
    skip = {"id"} if table.name in LOCAL_IDS else set()
    return [c.name for c in table.columns if c.name not in skip]


def shareable_handle(handle: Any) -> Any:
    """An attempt's handle without what stays local (LOCAL_HANDLE_KEYS)."""
    extra = handle.get("extra") if isinstance(handle, dict) else None
    if not isinstance(extra, dict) or not LOCAL_HANDLE_KEYS & extra.keys():
        return handle
    return {**handle, "extra": {key: value for key, value in extra.items() if key not in LOCAL_HANDLE_KEYS}}


def upsert_jobs(dialect: str, columns: Sequence[str], *, local: bool, table: sa.Table = JOBS) -> Any:
    """Insert jobs, or merge them into the rows already there by the rules above."""
    stmt = _insert(dialect, table)
    new, old = stmt.excluded, table.c
    newer = new.updated_at > old.updated_at
    new_rank, old_rank = terminal_rank(new.status), terminal_rank(old.status)
    status_wins = sa.or_(new_rank > old_rank, sa.and_(new_rank == old_rank, newer))
    merged: dict[str, Any] = {}
    for name in columns:
        if name in KEPT or name in LEASE:
            continue
        if name in STATUS_BUNDLE:
            merged[name] = sa.case((status_wins, new[name]), else_=old[name])
        elif name in GROWING:
            merged[name] = _greatest(dialect, new[name], old[name])
        elif name in FILLED:
            merged[name] = sa.case(
                (newer, sa.func.coalesce(new[name], old[name])), else_=sa.func.coalesce(old[name], new[name])
            )
        else:
            merged[name] = sa.case((newer, new[name]), else_=old[name])
    if local:
        # A foreign job's lease ends with the job.
        ended = sa.and_(old.lease_owner == REMOTE_LEASE, terminal_rank(merged["status"]) > 0)
        merged["lease_owner"] = sa.case((ended, None), else_=old.lease_owner)
        merged["lease_expires_at"] = sa.case((ended, None), else_=old.lease_expires_at)
    return stmt.on_conflict_do_update(index_elements=["id"], set_=merged, where=sa.or_(newer, status_wins))


def upsert_attempts(dialect: str, columns: Sequence[str]) -> Any:
    stmt = _insert(dialect, ATTEMPTS)
    new, old = stmt.excluded, ATTEMPTS.c
    new_ended = new.ended_at.isnot(None)
    further = sa.or_(
        sa.and_(new_ended, old.ended_at.is_(None)),
        sa.and_(sa.or_(new_ended, old.ended_at.is_(None)), new.cost_usd > old.cost_usd),
    )
    changed = {c: new[c] for c in columns if c not in ("id", "job_id", "number")}
    return stmt.on_conflict_do_update(index_elements=["job_id", "number"], set_=changed, where=further)


def upsert_artifacts(dialect: str, columns: Sequence[str]) -> Any:
    stmt = _insert(dialect, ARTIFACTS)
    new, old = stmt.excluded, ARTIFACTS.c
    keep_uri = sa.and_(old.storage_path.contains("://"), sa.not_(new.storage_path.contains("://")))
    merged: dict[str, Any] = {
        "storage_path": sa.case((keep_uri, old.storage_path), else_=new.storage_path),
        "size_bytes": sa.case((new.size_bytes > 0, new.size_bytes), else_=old.size_bytes),
    }
    for name in ("sha256", "base_model", "validation_loss", "perplexity"):
        if name in columns:
            merged[name] = sa.func.coalesce(new[name], old[name])
    changed = sa.or_(*(merged[name].is_distinct_from(old[name]) for name in merged))
    return stmt.on_conflict_do_update(index_elements=["id"], set_=merged, where=changed)


def upsert_metrics(dialect: str) -> Any:
    stmt = _insert(dialect, METRICS)
    new, old = stmt.excluded, METRICS.c
    merged = {name: sa.func.coalesce(old[name], new[name]) for name in METRIC_FIELDS}
    gains = sa.or_(*(sa.and_(old[name].is_(None), new[name].isnot(None)) for name in METRIC_FIELDS))
    return stmt.on_conflict_do_update(index_elements=["job_id", "step"], set_=merged, where=gains)


def upsert_ratings(dialect: str) -> Any:
    stmt = _insert(dialect, RATINGS)
    new, old = stmt.excluded, RATINGS.c
    changed = {c: new[c] for c in ("choice", "adapter_label", "updated_at")}
    return stmt.on_conflict_do_update(
        index_elements=["job_id", "prompt_index", "rater"], set_=changed, where=new.updated_at > old.updated_at
    )


def insert_events(dialect: str) -> Any:
    return _insert(dialect, EVENTS).on_conflict_do_nothing(index_elements=["job_id", "seq"])


def update_newer_files(table: sa.Table, columns: Sequence[str]) -> Any:
    """Files already there by id take the incoming values when those are newer.

    Executed with one parameter set per row: ``v_<column>`` for each value, ``v_id`` and ``v_updated_at``.
    """
    values = {name: sa.bindparam(f"v_{name}", type_=table.c[name].type) for name in columns if name not in KEPT}
    return (
        sa.update(table)
        .where(table.c.id == sa.bindparam("v_id", type_=table.c.id.type))
        .where(table.c.updated_at < values["updated_at"])
        .values(values)
    )


def insert_new_files(dialect: str, table: sa.Table) -> Any:
    """Files not there yet; one already known by id or by content (sha256) is left alone."""
    return _insert(dialect, table).on_conflict_do_nothing()

"""Training metrics history: one row per (job, step); later values for a step fill in, never erase."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select

from store.db import Ledger
from store.models import TrainingMetric, utcnow

METRIC_FIELDS = (
    "epoch", "loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second", "gpu_memory_gb",
)  # fmt: skip


def record_metrics(ledger: Ledger, job_id: uuid.UUID, rows: Iterable[Mapping[str, Any]]) -> int:
    """Store metric rows (each with ``step`` and any of METRIC_FIELDS); returns how many were given.

    A step seen before keeps its values and gains any new non-null ones (an eval loss reported after the
    training loss of the same step, say).
    """
    values = list(rows)
    if not values:
        return 0
    with ledger.write() as session:
        upsert_metrics(session.connection(), job_id, values)
    return len(values)


def upsert_metrics(connection: sa.Connection, job_id: uuid.UUID, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert or fill in metric rows inside the caller's transaction."""
    values = []
    for row in rows:
        item: dict[str, Any] = {"job_id": job_id, "step": int(row["step"])}
        item.update({name: _number(row.get(name)) for name in METRIC_FIELDS})
        item["recorded_at"] = row.get("recorded_at") or utcnow()
        values.append(item)
    if not values:
        return
    table = TrainingMetric.__table__  # type: ignore[attr-defined]
    statement = sqlite_insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["job_id", "step"],
        set_={name: sa.func.coalesce(statement.excluded[name], table.c[name]) for name in METRIC_FIELDS},
    )
    connection.execute(statement, values)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def metrics_history(
    ledger: Ledger, job_id: uuid.UUID, *, last: int | None = None, after_step: int | None = None
) -> list[TrainingMetric]:
    """A job's metrics in step order (the newest ``last`` steps, or those after ``after_step``, when given)."""
    statement = select(TrainingMetric).where(col(TrainingMetric.job_id) == job_id)
    if after_step is not None:
        statement = statement.where(col(TrainingMetric.step) > after_step)
    if last is not None:
        statement = statement.order_by(col(TrainingMetric.step).desc()).limit(last)
        with ledger.read() as session:
            return list(reversed(session.exec(statement).all()))
    with ledger.read() as session:
        return list(session.exec(statement.order_by(col(TrainingMetric.step))).all())

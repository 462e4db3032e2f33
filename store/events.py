"""Job events in the ledger: append-only and unique per (job, seq), so ingesting twice adds nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select

from engine.events import EVENT_TYPES, AnyEvent, parse_event
from store.db import Ledger
from store.models import JobEvent, TrainingJob, UTCDateTime, utcnow

# Keys of an engine event line that are columns, not payload.
_ENVELOPE = frozenset({"seq", "type", "ts", "job_id"})


class EventRecord(NamedTuple):
    seq: int
    type: str
    ts: datetime
    payload: dict[str, Any]

    @classmethod
    def from_line(cls, event: Mapping[str, Any]) -> EventRecord:
        """An engine event (``{seq, ts, job_id, type, …}``) as a ledger record; the rest is payload."""
        ts = event.get("ts")
        when = datetime.fromisoformat(ts) if isinstance(ts, str) else ts if isinstance(ts, datetime) else utcnow()
        payload = {key: value for key, value in event.items() if key not in _ENVELOPE}
        return cls(int(event["seq"]), str(event["type"]), when, payload)


def record_events(ledger: Ledger, job_id: uuid.UUID, events: Iterable[EventRecord | Mapping[str, Any]]) -> int:
    """Store events for a job, skipping those already stored; returns how many were new.

    Also advances the job's ``last_event_seq`` (the supervisor's ingest cursor) in the same transaction.
    """
    records = [e if isinstance(e, EventRecord) else EventRecord.from_line(e) for e in events]
    if not records:
        return 0
    with ledger.write() as session:
        return insert_events(session.connection(), job_id, records)


def insert_events(connection: sa.Connection, job_id: uuid.UUID, records: list[EventRecord]) -> int:
    """Insert event records inside the caller's transaction (duplicates skipped); returns how many were new."""
    time_type = UTCDateTime()
    rows = [
        {
            "job_id": job_id.hex,
            "seq": r.seq,
            "type": r.type,
            "payload": json.dumps(r.payload, default=str),
            "ts": time_type.process_bind_param(r.ts, _SQLITE),
        }
        for r in records
    ]
    table = sa.table(
        JobEvent.__tablename__,
        sa.column("job_id"), sa.column("seq"), sa.column("type"), sa.column("payload"), sa.column("ts"),
    )  # fmt: skip
    statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=["job_id", "seq"])
    newest = max(r.seq for r in records)
    result = connection.execute(statement, rows)
    connection.execute(
        sa.update(TrainingJob)
        .where(col(TrainingJob.id) == job_id, col(TrainingJob.last_event_seq) < newest)
        .values(last_event_seq=newest)
    )
    return max(result.rowcount, 0)


_SQLITE = sa.create_engine("sqlite://").dialect


def list_events(
    ledger: Ledger,
    job_id: uuid.UUID,
    *,
    after_seq: int = 0,
    types: Iterable[str] | None = None,
    limit: int | None = None,
) -> list[JobEvent]:
    """A job's events in seq order, after ``after_seq``, optionally of some types only."""
    statement = select(JobEvent).where(col(JobEvent.job_id) == job_id, col(JobEvent.seq) > after_seq)
    if types is not None:
        statement = statement.where(col(JobEvent.type).in_(list(types)))
    statement = statement.order_by(col(JobEvent.seq))
    if limit is not None:
        statement = statement.limit(limit)
    with ledger.read() as session:
        return list(session.exec(statement).all())


def count_events(ledger: Ledger, job_id: uuid.UUID | None = None) -> int:
    statement = select(sa.func.count()).select_from(JobEvent)
    if job_id is not None:
        statement = statement.where(col(JobEvent.job_id) == job_id)
    with ledger.read() as session:
        return int(session.exec(statement).one())


def typed_event(row: JobEvent) -> AnyEvent | None:
    """A stored event as the engine's typed event (ingest checked it against the schema on its way in); None for
    a type this version does not know, or a row stored before ingest checked events."""
    if row.type not in EVENT_TYPES:
        return None
    try:
        return parse_event({**row.payload, "type": row.type, "seq": row.seq, "ts": row.ts})
    except ValueError:
        return None

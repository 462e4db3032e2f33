"""Notices in the ledger: each recorded once per channel before it is sent, with its tries and their outcome.

A notice (a job completed, failed, was interrupted, resumed or stopped at a limit; a monthly budget alert) is
identified by its dedupe key. Its row per channel is unique by (key, channel), so whichever process records
it first is the one that sends it: a second ``record_notice`` with the same key records and sends nothing.

A row is *claimed* before each try: its attempt count goes up and it is hidden from other senders for
``CLAIM`` (longer than any try lasts). A sender that dies mid-try leaves the row to be retried once the claim
lapses; a failed try is retried after a growing delay until ``max_attempts`` tries have been made.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, select

from store.db import Ledger
from store.models import NoticeDelivery, utcnow

PENDING, SENT, FAILED = "pending", "sent", "failed"
CLAIM = timedelta(minutes=2)
RETRY_FIRST = timedelta(seconds=30)
RETRY_MAX = timedelta(hours=1)
ERROR_LENGTH = 500
TABLE = NoticeDelivery.__table__  # type: ignore[attr-defined]


class NoticeKind(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    RESUMED = "resumed"
    LIMIT = "limit"
    BUDGET = "budget"


@dataclass(frozen=True)
class Notice:
    """What to tell the user; ``key`` makes it once-only (e.g. ``completed:<job id>``)."""

    job_id: uuid.UUID | None
    kind: NoticeKind
    title: str
    body: str
    key: str
    blocks: list[dict[str, Any]] | None = field(default=None, compare=False)


def record_notice(ledger: Ledger, notice: Notice, channels: Iterable[str], *, now: datetime | None = None) -> list[int]:
    """Record ``notice`` on each channel it is not yet recorded on; the ids of the rows this call added.

    The rows come back claimed for their first try, so the caller sends exactly those.
    """
    wanted = list(dict.fromkeys(channels))
    if not wanted:
        return []
    with ledger.read() as session:  # a notice already recorded everywhere costs no write lock
        known = set(session.exec(select(NoticeDelivery.channel).where(NoticeDelivery.key == notice.key)).all())
    missing = [channel for channel in wanted if channel not in known]
    if not missing:
        return []
    now = now or utcnow()
    added = []
    with ledger.write() as session:
        connection = session.connection()
        for channel in missing:
            values = {
                "key": notice.key, "channel": channel, "job_id": notice.job_id, "kind": str(notice.kind),
                "title": notice.title, "body": notice.body, "blocks": notice.blocks, "status": PENDING,
                "attempts": 1, "created_at": now, "next_attempt_at": now + CLAIM,
            }  # fmt: skip
            statement = (
                sqlite_insert(TABLE)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["key", "channel"])
                .returning(TABLE.c.id)
            )
            row_id = connection.execute(statement).scalar()
            if row_id is not None:
                added.append(int(row_id))
    return added


def get_deliveries(ledger: Ledger, ids: Iterable[int]) -> list[NoticeDelivery]:
    """The rows with these ids, as claimed by ``record_notice``."""
    wanted = list(ids)
    if not wanted:
        return []
    with ledger.read() as session:
        return list(session.exec(select(NoticeDelivery).where(col(NoticeDelivery.id).in_(wanted))).all())


def claim_due(
    ledger: Ledger, max_attempts: int, *, now: datetime | None = None, limit: int = 50
) -> list[NoticeDelivery]:
    """Rows whose next try is due, claimed for this caller (their try counted, hidden from other senders)."""
    now = now or utcnow()
    statement = (
        select(NoticeDelivery)
        .where(NoticeDelivery.status != SENT)
        .where(NoticeDelivery.attempts < max_attempts)
        .where(col(NoticeDelivery.next_attempt_at) <= now)
        .order_by(col(NoticeDelivery.next_attempt_at), col(NoticeDelivery.id))
        .limit(limit)
    )
    with ledger.write() as session:  # the write lock makes select-and-claim one step across processes
        _abandon_lapsed(session, max_attempts, now)
        rows = list(session.exec(statement).all())
        for row in rows:
            row.attempts += 1
            row.next_attempt_at = now + CLAIM
            session.add(row)
    return rows


def any_due(ledger: Ledger, max_attempts: int, *, now: datetime | None = None) -> bool:
    """Whether a delivery's try is due (a read: no write lock)."""
    statement = (
        select(NoticeDelivery.id)
        .where(NoticeDelivery.status != SENT)
        .where(col(NoticeDelivery.next_attempt_at) <= (now or utcnow()))
        .limit(1)
    )
    with ledger.read() as session:
        return session.exec(statement).first() is not None


def _abandon_lapsed(session: Session, max_attempts: int, now: datetime) -> None:
    """A last try whose sender died (its claim lapsed, unfinished) will not be made again: say so."""
    lapsed = (
        select(NoticeDelivery)
        .where(NoticeDelivery.status != SENT)
        .where(NoticeDelivery.attempts >= max_attempts)
        .where(col(NoticeDelivery.next_attempt_at) <= now)
    )
    for row in session.exec(lapsed).all():
        row.status, row.next_attempt_at = FAILED, None
        row.last_error = row.last_error or "the sender stopped during its last try"
        session.add(row)


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failed try: doubling from RETRY_FIRST, at most RETRY_MAX."""
    return min(RETRY_FIRST * 2 ** max(attempts - 1, 0), RETRY_MAX)


def mark_sent(ledger: Ledger, delivery_id: int, *, now: datetime | None = None) -> None:
    with ledger.write() as session:
        row = session.get(NoticeDelivery, delivery_id)
        if row is not None:
            row.status, row.sent_at, row.next_attempt_at = SENT, now or utcnow(), None
            session.add(row)


def mark_failed(
    ledger: Ledger, delivery_id: int, error: str, *, max_attempts: int, now: datetime | None = None
) -> NoticeDelivery | None:
    """Record a failed try; the row is due again after ``retry_delay``, or never once out of tries.

    ``error`` must already be free of secrets: it is stored as given (shortened).
    """
    now = now or utcnow()
    with ledger.write() as session:
        row = session.get(NoticeDelivery, delivery_id)
        if row is None or row.status == SENT:
            return row
        row.status, row.last_error = FAILED, error[:ERROR_LENGTH]
        row.next_attempt_at = now + retry_delay(row.attempts) if row.attempts < max_attempts else None
        session.add(row)
    return row


def give_up(ledger: Ledger, delivery_id: int, error: str) -> None:
    """Stop trying a row (its channel is gone), keeping why."""
    with ledger.write() as session:
        row = session.get(NoticeDelivery, delivery_id)
        if row is not None and row.status != SENT:
            row.status, row.last_error, row.next_attempt_at = FAILED, error[:ERROR_LENGTH], None
            session.add(row)


def list_deliveries(
    ledger: Ledger, *, key: str | None = None, job_id: uuid.UUID | None = None, limit: int = 200
) -> list[NoticeDelivery]:
    """Newest first."""
    statement = select(NoticeDelivery).order_by(col(NoticeDelivery.id).desc()).limit(limit)
    if key is not None:
        statement = statement.where(NoticeDelivery.key == key)
    if job_id is not None:
        statement = statement.where(NoticeDelivery.job_id == job_id)
    with ledger.read() as session:
        return list(session.exec(statement).all())

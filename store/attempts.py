"""Job attempts: each launch of a job with its handle and rate; cost accrues per attempt, the job sums them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from store.db import Ledger
from store.models import JobAttempt, JobEvent, TrainingJob, utcnow


def start_attempt(
    ledger: Ledger,
    job_id: uuid.UUID,
    *,
    provider: str,
    handle: dict[str, Any],
    rate_usd_per_hour: float,
    gpu_count: int,
) -> JobAttempt:
    """Record a new launch of a job (numbered from 1)."""
    with ledger.write() as session:
        number = session.exec(
            select(sa.func.coalesce(sa.func.max(JobAttempt.number), 0)).where(col(JobAttempt.job_id) == job_id)
        ).one()
        attempt = JobAttempt(
            job_id=job_id,
            number=int(number) + 1,
            provider=provider,
            handle=handle,
            rate_usd_per_hour=rate_usd_per_hour,
            gpu_count=gpu_count,
        )
        session.add(attempt)
    return attempt


def current_attempt(ledger: Ledger, job_id: uuid.UUID) -> JobAttempt | None:
    """The job's newest attempt."""
    statement = select(JobAttempt).where(col(JobAttempt.job_id) == job_id).order_by(col(JobAttempt.number).desc())
    with ledger.read() as session:
        return session.exec(statement.limit(1)).first()


def list_attempts(ledger: Ledger, job_id: uuid.UUID) -> list[JobAttempt]:
    statement = select(JobAttempt).where(col(JobAttempt.job_id) == job_id).order_by(col(JobAttempt.number))
    with ledger.read() as session:
        return list(session.exec(statement).all())


def open_attempts(ledger: Ledger, job_id: uuid.UUID | None = None) -> list[JobAttempt]:
    """Attempts not yet ended, of one job or of every job, oldest first."""
    statement = select(JobAttempt).where(col(JobAttempt.ended_at).is_(None))
    if job_id is not None:
        statement = statement.where(col(JobAttempt.job_id) == job_id)
    with ledger.read() as session:
        return list(session.exec(statement.order_by(col(JobAttempt.id))).all())


def update_handle(ledger: Ledger, attempt_id: int, handle: dict[str, Any]) -> None:
    with ledger.write() as session:
        attempt = session.get(JobAttempt, attempt_id)
        if attempt is not None:
            attempt.handle = handle
            session.add(attempt)


def accrue(
    ledger: Ledger,
    attempt_id: int,
    *,
    now: datetime | None = None,
    rate_usd_per_hour: float | None = None,
    outcome: str | None = None,
    cost_usd: float | None = None,
) -> tuple[float, float]:
    """Bring an attempt's cost up to ``now`` (and end it with ``outcome``); the job's cost and GPU-hours
    become the sum over its attempts. ``cost_usd``: the attempt's cost as its engine counted it, instead of
    the rate over the time since it was launched. Returns (attempt cost, job cost)."""
    now = now or utcnow()
    with ledger.write() as session:
        attempt = session.get(JobAttempt, attempt_id)
        if attempt is None:
            raise LookupError(f"no attempt {attempt_id}")
        if rate_usd_per_hour is not None:
            attempt.rate_usd_per_hour = rate_usd_per_hour
        if attempt.ended_at is None:
            hours = max((now - attempt.started_at).total_seconds(), 0.0) / 3600
            attempt.cost_usd = round(hours * attempt.rate_usd_per_hour if cost_usd is None else cost_usd, 6)
            if outcome is not None:
                attempt.ended_at, attempt.outcome = now, outcome
        session.add(attempt)
        session.flush()
        attempts = session.exec(select(JobAttempt).where(col(JobAttempt.job_id) == attempt.job_id)).all()
        job = session.get(TrainingJob, attempt.job_id)
        total = sum(a.cost_usd for a in attempts)
        if job is not None:
            job.actual_cost_usd = round(total, 6)
            job.gpu_hours = round(
                sum(((a.ended_at or now) - a.started_at).total_seconds() / 3600 * a.gpu_count for a in attempts), 6
            )
            job.updated_at = now
            session.add(job)
        return attempt.cost_usd, total


def running_hours(ledger: Ledger, job_id: uuid.UUID, now: datetime | None = None) -> float:
    """How long the job's attempts have run, together (the gaps between them do not count)."""
    now = now or utcnow()
    return sum(((a.ended_at or now) - a.started_at).total_seconds() for a in list_attempts(ledger, job_id)) / 3600


@dataclass(frozen=True)
class AttemptEnd:
    at: datetime  # when the run ended, by its own clock
    cost_usd: float | None  # what it cost by its engine's count, where the engine's wall time is what is billed


def attempt_end(ledger: Ledger, job_id: uuid.UUID, attempt: JobAttempt) -> AttemptEnd:
    """When an attempt's run ended, from its own events: the terminal stage (or, for a run that vanished, its
    last event), whenever this process hears of it. A local engine's own cost, counted over its own wall time,
    is taken as it is; a pod is billed from its creation, so its cost is the rate up to the engine's end."""
    since = attempt.started_at
    statement = (
        select(JobEvent)
        .where(col(JobEvent.job_id) == job_id, col(JobEvent.ts) >= since)
        .order_by(col(JobEvent.seq).desc())
        .limit(2)
    )
    with ledger.read() as session:
        last = list(session.exec(statement).all())
    if not last:
        return AttemptEnd(at=utcnow(), cost_usd=None)
    end = last[0]
    cost = None
    if attempt.provider == "local" and len(last) == 2 and last[1].type == "cost" and end.type == "stage":
        cost = last[1].payload.get("cost_usd")
    return AttemptEnd(at=max(end.ts, since), cost_usd=float(cost) if cost is not None else None)

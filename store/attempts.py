"""Job attempts: each launch of a job with its handle and rate; cost accrues per attempt, the job sums them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from store.db import Ledger
from store.models import JobAttempt, TrainingJob, utcnow


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
) -> tuple[float, float]:
    """Bring an attempt's cost up to ``now`` (and end it with ``outcome``); the job's cost and GPU-hours
    become the sum over its attempts. Returns (attempt cost, job cost)."""
    now = now or utcnow()
    with ledger.write() as session:
        attempt = session.get(JobAttempt, attempt_id)
        if attempt is None:
            raise LookupError(f"no attempt {attempt_id}")
        if rate_usd_per_hour is not None:
            attempt.rate_usd_per_hour = rate_usd_per_hour
        if attempt.ended_at is None:
            hours = max((now - attempt.started_at).total_seconds(), 0.0) / 3600
            attempt.cost_usd = round(hours * attempt.rate_usd_per_hour, 6)
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

"""Budget: month spending from the ledger, "may this job start?", and "has this job crossed a limit?".

A job's cost counts in the calendar month (UTC) it started in (created, if it never started). Live jobs
count with their cost so far, and their expected remaining cost is held against the month as committed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from engine.config import Resources
from engine.limits import Limits
from store.attempts import running_hours
from store.db import Ledger
from store.models import TrainingJob, utcnow
from store.settings import Settings
from store.status import LIVE, TERMINAL


def month_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The UTC calendar month holding ``now``: [start, next start)."""
    now = (now or utcnow()).astimezone(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def _job_time() -> Any:
    return sa.func.coalesce(col(TrainingJob.started_at), col(TrainingJob.created_at))


@dataclass(frozen=True)
class MonthSpend:
    month: str  # "2026-11"
    spent: float  # every job of the month, live ones at their cost so far
    active_cost: float  # live jobs' cost so far (part of spent)
    committed: float  # live jobs' expected remaining cost (estimate minus cost so far)
    active_jobs: int
    finished_jobs: int
    average_per_job: float | None  # over the month's finished jobs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def month_spend(ledger: Ledger, now: datetime | None = None) -> MonthSpend:
    start, end = month_bounds(now)
    statement = select(TrainingJob.status, TrainingJob.actual_cost_usd, TrainingJob.estimated_cost_usd).where(
        _job_time() >= start, _job_time() < end
    )
    with ledger.read() as session:
        rows = session.exec(statement).all()
    spent = sum(cost or 0.0 for _, cost, _ in rows)
    live = [(cost or 0.0, est) for status, cost, est in rows if status in LIVE]
    finished = [cost or 0.0 for status, cost, _ in rows if status in TERMINAL]
    return MonthSpend(
        month=start.strftime("%Y-%m"),
        spent=spent,
        active_cost=sum(cost for cost, _ in live),
        committed=sum(max((est or 0.0) - cost, 0.0) for cost, est in live),
        active_jobs=len(live),
        finished_jobs=len(finished),
        average_per_job=sum(finished) / len(finished) if finished else None,
    )


def monthly_totals(ledger: Ledger, months: int = 12) -> list[dict[str, Any]]:
    """Spend and job count per month, newest first."""
    month = sa.func.strftime("%Y-%m", _job_time()).label("month")
    statement = (
        select(month, sa.func.sum(TrainingJob.actual_cost_usd), sa.func.count())
        .group_by(month)
        .order_by(month.desc())
        .limit(months)
    )
    with ledger.read() as session:
        rows = session.exec(statement).all()
    return [{"month": m, "spent": round(float(s or 0.0), 4), "jobs": int(n)} for m, s, n in rows]


@dataclass
class Decision:
    """Whether a job may start; ``reasons`` say why not, ``alerts`` warn either way."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def may_start(settings: Settings, month: MonthSpend, estimated_cost: float) -> Decision:
    """May a job estimated to cost up to ``estimated_cost`` start, given this month's spending?"""
    reasons = []
    if estimated_cost > settings.per_job_ceiling_usd:
        reasons.append(
            f"estimated cost up to ${estimated_cost:,.2f} is above the per-job ceiling of "
            f"${settings.per_job_ceiling_usd:,.2f} (setting per_job_ceiling_usd)"
        )
    after = month.spent + month.committed + estimated_cost
    if after > settings.monthly_budget_usd:
        reasons.append(
            f"the month would reach ${after:,.2f} (spent ${month.spent:,.2f}, running jobs' remaining "
            f"${month.committed:,.2f}, this job up to ${estimated_cost:,.2f}) — above the monthly budget of "
            f"${settings.monthly_budget_usd:,.2f} (setting monthly_budget_usd)"
        )
    alerts = [
        f"this job would take {month.month} past {share:.0%} of the monthly budget "
        f"(${after:,.2f} of ${settings.monthly_budget_usd:,.2f})"
        for share in crossed_thresholds(settings, month.spent + month.committed, after)
    ]
    return Decision(allowed=not reasons, reasons=reasons, alerts=alerts)


def crossed_thresholds(settings: Settings, before: float, after: float) -> list[float]:
    """Alert thresholds (shares of the monthly budget) passed when spending goes from before to after."""
    budget = settings.monthly_budget_usd
    if budget <= 0:
        return []
    return [share for share in settings.alert_thresholds if before < share * budget <= after]


def month_alerts(settings: Settings, month: MonthSpend) -> list[str]:
    """The alert for the highest threshold this month's spending has reached, if any."""
    budget = settings.monthly_budget_usd
    reached = [share for share in settings.alert_thresholds if budget > 0 and month.spent >= share * budget]
    if not reached:
        return []
    return [
        f"{month.month} has spent ${month.spent:,.2f} — {month.spent / budget:.0%} of the "
        f"${budget:,.2f} monthly budget (alert at {max(reached):.0%})"
    ]


@dataclass(frozen=True)
class Limit:
    """A limit a running job has crossed, and the reason to give when cancelling it."""

    kind: str  # "cost" or "duration"
    reason: str


def crossed_limit(
    settings: Settings, resources: Resources | None, cost_so_far: float, elapsed_hours: float
) -> Limit | None:
    """The first limit a running job has crossed: its cost cap, or its maximum duration."""
    caps = [(settings.hard_cap_usd, "the runaway hard cap (setting hard_cap_usd)")]
    hours = [(settings.max_duration_hours, "the maximum duration (setting max_duration_hours)")]
    if resources is not None and resources.max_cost_usd is not None:
        caps.append((resources.max_cost_usd, "the job's max_cost_usd"))
    if resources is not None and resources.max_hours is not None:
        hours.append((resources.max_hours, "the job's max_hours"))
    cap, cap_name = min(caps)
    if cost_so_far >= cap:
        return Limit("cost", f"cost ${cost_so_far:,.2f} reached {cap_name} of ${cap:,.2f}")
    limit, limit_name = min(hours)
    if elapsed_hours >= limit:
        return Limit("duration", f"running for {elapsed_hours:,.2f} h reached {limit_name} of {limit:g} h")
    return None


def launch_limits(ledger: Ledger, settings: Settings, job: TrainingJob, resources: Resources | None) -> Limits:
    """The limits a launch hands the engine: the smallest cost limit on the whole job (its max_cost_usd, the
    hard cap, what the monthly budget has left for it) and the smallest duration limit, with what earlier
    attempts spent and ran. The provider adds its rate."""
    now = utcnow()
    spent = job.actual_cost_usd or 0.0
    own_committed = max((job.estimated_cost_usd or 0.0) - spent, 0.0) if job.status in LIVE else 0.0
    hours_before = running_hours(ledger, job.id, now)
    return _limits(ledger, settings, resources, spent=spent, own_committed=own_committed, hours_before=hours_before)


def planned_limits(ledger: Ledger, settings: Settings, resources: Resources | None) -> Limits:
    """The limits a job not yet recorded would start with (``lorapod run --plan``)."""
    return _limits(ledger, settings, resources, spent=0.0, own_committed=0.0, hours_before=0.0)


def _limits(
    ledger: Ledger,
    settings: Settings,
    resources: Resources | None,
    *,
    spent: float,
    own_committed: float,
    hours_before: float,
) -> Limits:
    month = month_spend(ledger, utcnow())
    # What everything else this month spent and holds: the rest of the budget is this job's at most.
    others = (month.spent - spent) + (month.committed - own_committed)
    caps = [
        (settings.hard_cap_usd, "the runaway hard cap (setting hard_cap_usd)"),
        (max(settings.monthly_budget_usd - others, 0.0), f"what the {month.month} budget had left"),
    ]
    hours = [(settings.max_duration_hours, "the maximum duration (setting max_duration_hours)")]
    if resources is not None and resources.max_cost_usd is not None:
        caps.append((resources.max_cost_usd, "the job's max_cost_usd"))
    if resources is not None and resources.max_hours is not None:
        hours.append((resources.max_hours, "the job's max_hours"))
    ceiling, ceiling_name = min(caps, key=lambda cap: cap[0])
    max_hours, max_hours_name = min(hours, key=lambda limit: limit[0])
    return Limits(
        ceiling_usd=round(ceiling, 6), ceiling_name=ceiling_name, spent_before_usd=round(spent, 6),
        max_hours=max_hours, max_hours_name=max_hours_name, hours_before=round(hours_before, 6),
    )  # fmt: skip


def may_resume(ledger: Ledger, settings: Settings, job: TrainingJob) -> Decision:
    """May an interrupted job run again? The rules of a start, on what it is expected still to cost: the
    per-job ceiling on its whole cost, and the monthly budget with every running job counted."""
    spent = job.actual_cost_usd or 0.0
    remaining = max((job.estimated_cost_usd or 0.0) - spent, 0.0)
    reasons = []
    if job.estimated_cost_usd is not None and job.estimated_cost_usd > settings.per_job_ceiling_usd:
        reasons.append(
            f"its estimate of ${job.estimated_cost_usd:,.2f} is above the per-job ceiling of "
            f"${settings.per_job_ceiling_usd:,.2f} (setting per_job_ceiling_usd)"
        )
    if spent >= settings.per_job_ceiling_usd:
        reasons.append(
            f"it has already cost ${spent:,.2f}, the per-job ceiling of ${settings.per_job_ceiling_usd:,.2f} "
            "(setting per_job_ceiling_usd)"
        )
    month = month_spend(ledger)
    if job.status in LIVE:  # its own remaining cost is held against the month already: count it once
        month = replace(month, committed=max(month.committed - remaining, 0.0))
    decision = may_start(settings, month, remaining)
    return Decision(
        allowed=not reasons and decision.allowed, reasons=reasons + decision.reasons, alerts=decision.alerts
    )

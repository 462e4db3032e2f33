"""Following one job: hold its lease and ingest what its run writes, or watch what the lease holder records.

A follower's round reads the run's state, then its new events, into the ledger; applies what they mean
(status, the end of an attempt and its cost, the budget alerts, the limits as a backstop to the engine's own);
and notices a run that ended without a word (interrupted, then resumed by itself where the settings say so).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from remote import notices
from remote.provider import EventStream, Provider, RunHandle, RunState
from store import attempts as attempt_store
from store.alerts import raise_alert
from store.budget import crossed_limit, crossed_thresholds, month_spend
from store.db import Ledger
from store.events import list_events
from store.ingest import ingest
from store.jobs import acquire_lease, get_job, job_spec, release_lease, short_id, transition
from store.models import JobAttempt, TrainingJob
from store.status import TERMINAL, JobStatus

if TYPE_CHECKING:
    from remote.supervisor import Supervisor

LEASE_SECONDS = 15.0
RENEW_EVERY = 5.0
COST_EVERY = 2.0
BACKSTOP_GRACE_S = 60.0


@dataclass
class Update:
    """What a follower saw in one round: new events, and the job as the ledger now has it."""

    job: TrainingJob
    events: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    supervising: bool = True  # False: another process holds the lease; this one only watches


class Follower:
    """One follower of one job: holds the lease (and ingests) or watches the ledger."""

    def __init__(
        self, supervisor: Supervisor, job: TrainingJob, on_update: Callable[[Update], None] | None, poll: float
    ) -> None:
        self.sup = supervisor
        self.job = job
        self.on_update = on_update
        self.poll = poll
        self.stream: EventStream | None = None
        self.current: tuple[JobAttempt, RunHandle] | None = None
        self.seen_seq = job.last_event_seq if on_update is None else 0
        self.drained = False
        self.limit_hit = False
        self.last_renew = 0.0
        self.last_cost = 0.0
        self.idle_rounds = 0
        self.supervising = acquire_lease(supervisor.ledger, job.id, supervisor.owner, LEASE_SECONDS)
        self.last_renew = time.monotonic()

    @property
    def ledger(self) -> Ledger:
        return self.sup.ledger

    def idle_without_run(self) -> bool:
        return self.current is None and self.idle_rounds > 1

    def round(self) -> TrainingJob:
        now = time.monotonic()
        if now - self.last_renew >= (RENEW_EVERY if self.supervising else 1.0):
            self.supervising = acquire_lease(self.ledger, self.job.id, self.sup.owner, LEASE_SECONDS)
            self.last_renew = now
        if self.supervising:
            self._supervise()
        else:  # a watcher shows what the supervising process records
            self.drained = True
            time.sleep(self.poll)
        self.job = get_job(self.ledger, self.job.id)
        self._report()
        return self.job

    def _report(self) -> None:
        if self.on_update is None:
            return
        fresh = [
            {"seq": e.seq, "type": e.type, "ts": e.ts.isoformat(), **e.payload}
            for e in list_events(self.ledger, self.job.id, after_seq=self.seen_seq)
        ]
        if fresh:
            self.seen_seq = fresh[-1]["seq"]
        self.on_update(Update(job=self.job, events=fresh, supervising=self.supervising))

    def _supervise(self) -> None:
        job = get_job(self.ledger, self.job.id)
        if self.current is None:
            self.current = self.sup.handle(job.id)
            if self.current is None:  # queued and never launched
                self.idle_rounds += 1
                self.drained = True
                time.sleep(self.poll)
                return
        attempt, handle = self.current
        provider = self.sup.provider(job.provider)
        if self.stream is None:
            self.stream = provider.events(handle, job.last_event_seq)
        # The run's state is read before its events: whatever it wrote before it ended is then read below,
        # so "ended without a terminal event" is never decided while its last lines are unread.
        state = provider.state(handle) if job.status not in TERMINAL else RunState.EXITED
        events = self.stream.poll(self.poll)
        if events:
            result = ingest(self.ledger, job.id, events)
            if result.terminal:
                self._finalize(attempt, result.status)
            self.drained = False
            return
        self.drained = True
        job = get_job(self.ledger, job.id)
        if job.status in TERMINAL:
            if attempt.ended_at is None:
                self._finalize(attempt, job.status)
            return
        if job.status in (JobStatus.QUEUED, JobStatus.INTERRUPTED):
            self.idle_rounds += 1
            return
        self._accrue(attempt, job, provider, handle)
        if state in (RunState.EXITED, RunState.LOST):
            self._interrupted(attempt, job, state)

    def _accrue(self, attempt: JobAttempt, job: TrainingJob, provider: Provider, handle: RunHandle) -> None:
        now = time.monotonic()
        if now - self.last_cost < COST_EVERY:
            return
        self.last_cost = now
        _, total = attempt_store.accrue(self.ledger, attempt.id or 0)
        hours = attempt_store.running_hours(self.ledger, job.id)  # the time its attempts ran, as the engine counts
        # The engine stops itself at its limits; this is the backstop for one that hangs, so it waits a grace
        # period past the limit rather than race the engine's own, exact stop.
        grace_cost = attempt.rate_usd_per_hour * BACKSTOP_GRACE_S / 3600
        limit = crossed_limit(
            self.sup.settings, job_spec(job).resources, total - grace_cost, hours - BACKSTOP_GRACE_S / 3600
        )
        if limit is not None and not self.limit_hit:
            self.limit_hit = True
            reason = f"stopped by the budget: {limit.reason}"
            raise_alert(self.ledger, f"limit:{job.id}", f"limit_{limit.kind}", reason, job_id=job.id, level="error")
            notices.on_job(self.ledger, self.sup.settings, job.id, "limit", reason)
            provider.cancel(handle, reason)
        self._month_alerts()
        notices.retry_due(self.ledger, self.sup.settings)

    def _month_alerts(self) -> None:
        month = month_spend(self.ledger)
        settings = self.sup.settings
        for share in crossed_thresholds(settings, 0.0, month.spent):
            raise_alert(
                self.ledger,
                f"budget:{month.month}:{share}",
                "budget",
                f"{month.month} has spent ${month.spent:,.2f}, past {share:.0%} of the "
                f"${settings.monthly_budget_usd:,.2f} budget",
                level="error" if share >= max(settings.alert_thresholds) else "warning",
            )
            notices.on_budget(self.ledger, settings, f"budget:{month.month}:{share}")

    def _finalize(self, attempt: JobAttempt, status: str) -> None:
        # The attempt ends when its engine said it ended, however late this process hears of it.
        end = attempt_store.attempt_end(self.ledger, self.job.id, attempt)
        attempt_store.accrue(self.ledger, attempt.id or 0, now=end.at, outcome=str(status), cost_usd=end.cost_usd)
        notices.on_job_end(self.ledger, self.sup.settings, self.job.id)
        self.current = self.sup.handle(self.job.id)  # the attempt as ended: finalized once, released once
        self._limit_alert()
        self._month_alerts()
        handle = RunHandle.model_validate(attempt.handle)
        self.sup.provider(handle.provider).release(handle)

    def _limit_alert(self) -> None:
        """The alert for a job that stopped itself at a limit (its terminal stage event names it)."""
        stages = list_events(self.ledger, self.job.id, types=["stage"])
        last = stages[-1].payload if stages else {}
        if last.get("stage") == "cancelled" and last.get("limit"):
            message = f"job {short_id(self.job.id)}: {last.get('message')}"
            raise_alert(self.ledger, f"limit:{self.job.id}", f"limit_{last['limit']}", message,
                        job_id=self.job.id, level="error")  # fmt: skip
            notices.on_job(self.ledger, self.sup.settings, self.job.id, "limit", str(last.get("message") or ""))

    def _interrupted(self, attempt: JobAttempt, job: TrainingJob, state: RunState) -> None:
        what = "the pod disappeared" if state is RunState.LOST else "the engine process ended"
        message = f"{what} without a terminal event (killed, out of host memory, or the machine restarted)"
        end = attempt_store.attempt_end(
            self.ledger, job.id, attempt
        )  # its last sign of life, not when this process noticed
        attempt_store.accrue(self.ledger, attempt.id or 0, now=end.at, outcome="interrupted")
        transition(self.ledger, job.id, JobStatus.INTERRUPTED, error_message=message, error_category="interrupted")
        raise_alert(
            self.ledger,
            f"interrupted:{job.id}:{attempt.number}",
            "interrupted",
            f"job {short_id(job.id)}: {message}",
            job_id=job.id,
        )
        notices.on_job(self.ledger, self.sup.settings, job.id, "interrupted", message, attempt=attempt.number)
        self._reset()
        self.sup.auto_resume(job.id, attempt.number)

    def _reset(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.stream, self.current = None, None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        if self.supervising:
            release_lease(self.ledger, self.job.id, self.sup.owner)

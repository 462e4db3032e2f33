"""Notices: tell the user that a job completed, failed, was interrupted, resumed or stopped at a limit, or that
a monthly budget alert fired — once per configured channel, recorded in the ledger, retried when it fails.

::

    notify(ledger, settings, notice)        record it, then send it now; each new delivery's outcome
    notify_soon(ledger, settings, notice)   record it now, send it on a thread (never holds the caller up)
    deliver_pending(ledger, settings)       retry failed deliveries that are due (call it every minute or so)
    job_notice(ledger, job_id, kind, …)     the notice of a job event, worded from the job's ledger row
    budget_notice(key, message)             the notice of a budget alert

The supervisor's hooks (``on_job``, ``on_job_end``, ``on_budget``, and ``retry_due`` for its loop) cost nothing
when no channel is configured and never raise: a notice that cannot be recorded or sent is logged, and
supervision goes on.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from remote.notice_channels import Channel, ChannelError, channel_names, close_channels, configured_channels
from store.alerts import get_alert
from store.db import Ledger
from store.errors import StoreError
from store.jobs import get_job, short_id
from store.models import NoticeDelivery, utcnow
from store.notices import (
    Notice,
    NoticeKind,
    any_due,
    claim_due,
    get_deliveries,
    give_up,
    mark_failed,
    mark_sent,
    record_notice,
)
from store.settings import Settings

log = logging.getLogger(__name__)

WORDS = {
    NoticeKind.COMPLETED: "completed",
    NoticeKind.FAILED: "failed",
    NoticeKind.INTERRUPTED: "was interrupted",
    NoticeKind.RESUMED: "resumed",
    NoticeKind.LIMIT: "stopped at a limit",
    NoticeKind.BUDGET: "budget alert",
}
ENDINGS = {"completed": NoticeKind.COMPLETED, "failed": NoticeKind.FAILED}
RETRY_EVERY = 30.0


class _Throttle:
    """True at most once per ``every`` seconds, across threads."""

    def __init__(self, every: float) -> None:
        self.every, self.last = every, float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self.last < self.every:
                return False
            self.last = now
            return True


# Per process: every follower's loop calls retry_due, and one look every RETRY_EVERY seconds is enough.
_retry_throttle = _Throttle(RETRY_EVERY)


@dataclass(frozen=True)
class Outcome:
    """One try of one notice on one channel."""

    key: str
    channel: str
    sent: bool
    attempts: int
    error: str | None = None


def notify(ledger: Ledger, settings: Settings, notice: Notice) -> list[Outcome]:
    """Record ``notice`` on every configured channel, then send it on those this call recorded it on.

    A notice already recorded (by this process or another) is not sent again: the result is then empty.
    Failed sends are in the result and the ledger; ``deliver_pending`` retries them. Raises StoreError only
    when the ledger cannot be written.
    """
    ids = record_notice(ledger, notice, channel_names(settings))
    if not ids:
        return []
    return _deliver(ledger, settings, get_deliveries(ledger, ids), None)


def deliver_pending(ledger: Ledger, settings: Settings, *, now: datetime | None = None) -> list[Outcome]:
    """Try again each delivery whose retry is due (at most ``notify_max_attempts`` tries each)."""
    rows = claim_due(ledger, settings.notify_max_attempts, now=now)
    if not rows:
        return []
    return _deliver(ledger, settings, rows, now)


def notify_soon(ledger: Ledger, settings: Settings, notice: Notice) -> threading.Thread | None:
    """Record ``notice`` now and send it on a thread of its own; the thread, or None when nothing is to send.

    The thread is not a daemon: a process that ends right after still delivers (within the channels'
    timeouts). Never raises.
    """
    try:
        ids = record_notice(ledger, notice, channel_names(settings))
    except StoreError as exc:
        log.warning("notice %s not recorded: %s", notice.key, exc)
        return None
    if not ids:
        return None

    def send() -> None:
        try:
            _deliver(ledger, settings, get_deliveries(ledger, ids), None)
        except StoreError as exc:
            log.warning("notice %s: %s (retried by the next deliver_pending)", notice.key, exc)

    thread = threading.Thread(target=send, name=f"lorapod-notice-{notice.key}")
    thread.start()
    return thread


def _deliver(ledger: Ledger, settings: Settings, rows: Sequence[NoticeDelivery], now: datetime | None) -> list[Outcome]:
    channels = configured_channels(settings)
    try:
        return [_try(ledger, settings, channels.get(row.channel), row, now) for row in rows]
    finally:
        close_channels(channels)


def _try(
    ledger: Ledger, settings: Settings, channel: Channel | None, row: NoticeDelivery, now: datetime | None
) -> Outcome:
    assert row.id is not None
    if channel is None:
        error = f"the {row.channel} channel is no longer configured"
        give_up(ledger, row.id, error)
        log.warning("notice %s via %s given up: %s", row.key, row.channel, error)
        return Outcome(row.key, row.channel, False, row.attempts, error)
    try:
        channel.send(row)
    except ChannelError as exc:
        error = str(exc)
    except Exception as exc:  # a channel's bug must not stop the supervisor that sent the notice
        redact = getattr(channel, "redact", str)
        error = f"{row.channel} failed unexpectedly: {type(exc).__name__}: {redact(exc)}"
    else:
        mark_sent(ledger, row.id)
        log.info("notice %s sent via %s", row.key, row.channel)
        return Outcome(row.key, row.channel, True, row.attempts)
    updated = mark_failed(ledger, row.id, error, max_attempts=settings.notify_max_attempts, now=now)
    then = "retried later" if updated is not None and updated.next_attempt_at is not None else "given up"
    log.warning(
        "notice %s via %s failed (try %d of %d, %s): %s",
        row.key, row.channel, row.attempts, settings.notify_max_attempts, then, error,
    )  # fmt: skip
    return Outcome(row.key, row.channel, False, row.attempts, error)


def job_notice(
    ledger: Ledger, job_id: uuid.UUID, kind: NoticeKind | str, detail: str = "", *, attempt: int | None = None
) -> Notice:
    """The notice of a job event, worded from the job as the ledger has it.

    Its key is ``<kind>:<job id>``, or ``<kind>:<job id>:<attempt>`` for events that recur once per attempt
    (interrupted, resumed).
    """
    kind = NoticeKind(kind)
    job = get_job(ledger, job_id)
    name = f"job {short_id(job.id)}" + (f" “{job.name}”" if job.name else "")
    lines = [detail] if detail else []
    if attempt is not None:
        lines.append(f"attempt: {attempt}")
    if kind is NoticeKind.FAILED and job.error_message:
        lines.append(f"error: {job.error_message}")
        if job.error_hint:
            lines.append(f"hint: {job.error_hint}")
    lines.append(f"model: {job.base_model} on {job.gpu_type or job.provider}")
    if job.total_steps:
        lines.append(f"progress: step {job.current_step} of {job.total_steps}")
    if job.started_at is not None:
        minutes = ((job.completed_at or utcnow()) - job.started_at).total_seconds() / 60
        lines.append(f"ran: {minutes:,.0f} min, cost ${job.actual_cost_usd:,.2f}")
    if kind is NoticeKind.COMPLETED and job.lora_artifact_path:
        lines.append(f"adapter: {job.lora_artifact_path}")
    lines.append(f"details: lorapod show {short_id(job.id)}")
    return Notice(
        job_id=job.id,
        kind=kind,
        title=f"lorapod: {name} {WORDS[kind]}",
        body="\n".join(lines),
        key=f"{kind}:{job.id}" + (f":{attempt}" if attempt is not None else ""),
    )


def budget_notice(key: str, message: str) -> Notice:
    return Notice(job_id=None, kind=NoticeKind.BUDGET, title="lorapod: monthly budget alert", body=message, key=key)


def on_job(
    ledger: Ledger,
    settings: Settings,
    job_id: uuid.UUID,
    kind: NoticeKind | str,
    detail: str = "",
    *,
    attempt: int | None = None,
) -> None:
    """The supervisor's hook for a job event: the job's notice, sent on a thread."""
    if not channel_names(settings):
        return
    try:
        notice = job_notice(ledger, job_id, kind, detail, attempt=attempt)
    except StoreError as exc:
        log.warning("no %s notice for job %s: %s", kind, short_id(job_id), exc)
        return
    notify_soon(ledger, settings, notice)


def on_job_end(ledger: Ledger, settings: Settings, job_id: uuid.UUID) -> None:
    """The hook for a job that reached a terminal status: completed or failed (a cancel is the user's own
    doing, or a limit that ``on_job(…, "limit")`` has told of)."""
    if not channel_names(settings):
        return
    try:
        kind = ENDINGS.get(str(get_job(ledger, job_id).status))
    except StoreError as exc:
        log.warning("no notice for job %s: %s", short_id(job_id), exc)
        return
    if kind is not None:
        on_job(ledger, settings, job_id, kind)


def on_budget(ledger: Ledger, settings: Settings, alert_key: str) -> None:
    """The hook for a budget alert the ledger has raised: its message, told once per alert key."""
    if not channel_names(settings):
        return
    try:
        alert = get_alert(ledger, alert_key)
    except StoreError as exc:
        log.warning("no notice for alert %s: %s", alert_key, exc)
        return
    if alert is not None:
        notify_soon(ledger, settings, budget_notice(alert_key, alert.message))


def retry_due(ledger: Ledger, settings: Settings) -> threading.Thread | None:
    """The hook for a supervisor's loop: at most every RETRY_EVERY seconds, ``deliver_pending`` on a thread
    when a retry is due; the thread, or None."""
    if not _retry_throttle() or not channel_names(settings):
        return None
    try:
        if not any_due(ledger, settings.notify_max_attempts):
            return None
    except StoreError as exc:
        log.warning("notices not retried: %s", exc)
        return None

    def retry() -> None:
        try:
            deliver_pending(ledger, settings)
        except StoreError as exc:
            log.warning("notices not retried: %s", exc)

    thread = threading.Thread(target=retry, name="lorapod-notice-retries")
    thread.start()
    return thread

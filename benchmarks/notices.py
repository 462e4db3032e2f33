"""Notice benchmarks: from ``notify()`` to the receiver having the notice — a Slack-compatible webhook and an
SMTP server on 127.0.0.1 — how long ``notify_soon`` holds the supervisor, and a repeat's cost."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from remote.notices import notify, notify_soon
from store.db import Ledger
from store.notices import Notice, NoticeKind
from store.settings import Settings
from tests.standins.notices import MailServer, WebhookReceiver

RUNS = 40


@contextmanager
def _home(folder: Path) -> Iterator[None]:
    """Settings read from a fresh installation, not this user's."""
    saved = os.environ.get("LORAPOD_HOME")
    os.environ["LORAPOD_HOME"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LORAPOD_HOME", None)
        else:
            os.environ["LORAPOD_HOME"] = saved


def _notice(i: int, label: str) -> Notice:
    return Notice(
        job_id=None, kind=NoticeKind.COMPLETED, title=f"lorapod: job {i:08x} completed",
        body="model: demo on local\nran: 12 min, cost $0.00", key=f"bench:{label}:{i}",
    )  # fmt: skip


def _latencies(send: Callable[[int], None], arrived: Callable[[int], float]) -> list[float]:
    """Milliseconds from the call to the receiver(s) having notice ``i``, for each of RUNS notices."""
    times = []
    for i in range(RUNS):
        start = time.perf_counter()
        send(i)
        times.append((arrived(i + 1) - start) * 1000)
    return times


def _figure(name: str, times: list[float], conditions: str, target: str = "< 1000") -> dict[str, Any]:
    return {
        "name": name,
        "value": round(statistics.median(times), 2),
        "unit": f"ms (median of {RUNS})",
        "target": target,
        "conditions": f"{conditions}; p95 {statistics.quantiles(times, n=20)[-1]:.2f} ms",
    }


def _timed(call: Callable[[int], Any]) -> list[float]:
    times = []
    for i in range(RUNS):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _measure(ledger: Ledger, receiver: WebhookReceiver, mail: MailServer) -> list[dict[str, Any]]:
    last_post = lambda n: receiver.wait_for(n)[n - 1].received  # noqa: E731
    last_mail = lambda n: mail.wait_for(n)[n - 1].received  # noqa: E731
    smtp = {"notify_smtp_host": "127.0.0.1", "notify_smtp_port": mail.port, "notify_smtp_security": "plain"}
    webhook = Settings(notify_webhook_url=receiver.url)
    email = Settings(notify_email_to=["ops@example.com"], **smtp)
    both = Settings(notify_webhook_url=receiver.url, notify_email_to=["ops@example.com"], **smtp)
    recorded = "ledger record and state updates included (SQLite WAL)"
    results = [
        _figure(
            "notice latency: webhook",
            _latencies(lambda i: notify(ledger, webhook, _notice(i, "webhook")), last_post),
            f"notify() to a receiver on 127.0.0.1 having the POST; {recorded}",
        ),
        _figure(
            "notice latency: e-mail",
            _latencies(lambda i: notify(ledger, email, _notice(i, "email")), last_mail),
            f"notify() to an aiosmtpd server on 127.0.0.1 having the message (plain SMTP); {recorded}",
        ),
    ]
    posted, mailed = len(receiver.posts), len(mail.mails)
    results.append(
        _figure(
            "notice latency: webhook and e-mail",
            _latencies(
                lambda i: notify(ledger, both, _notice(i, "both")),
                lambda n: max(last_post(posted + n), last_mail(mailed + n)),
            ),
            f"notify() to both receivers having it (the channels are sent one after the other); {recorded}",
        )
    )
    held = []
    for i in range(RUNS):
        start = time.perf_counter()
        thread = notify_soon(ledger, both, _notice(i, "soon"))
        held.append((time.perf_counter() - start) * 1000)
        if thread is not None:
            thread.join()  # so the next call does not wait on this one's sending
    results.append(_figure("notify_soon: the caller held", held, "recorded on both channels, sent on a thread", "< 50"))
    repeat = _timed(lambda i: notify(ledger, both, _notice(i, "both")))  # already recorded: nothing sent
    results.append(_figure("notify again with a known key", repeat, "a read of the ledger, nothing sent", "< 10"))
    return results


def run() -> list[dict[str, Any]]:
    receiver, mail = WebhookReceiver(), MailServer()
    try:
        with tempfile.TemporaryDirectory() as tmp, _home(Path(tmp)):
            ledger = Ledger(Path(tmp) / "ledger.sqlite")
            try:
                return _measure(ledger, receiver, mail)
            finally:
                ledger.close()
    finally:
        receiver.close()
        mail.close()

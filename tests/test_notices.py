"""Notices: once per channel to a real webhook receiver, SMTP server and notify-send; retries; no secret leaks."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

import presets
from engine.config import JobSpec
from engine.limits import Limits
from remote import notices
from remote.notices import deliver_pending, job_notice, notify
from remote.provider import Provider, RunHandle, RunState
from remote.supervisor import Supervisor
from store.db import Ledger
from store.jobs import create_job, transition
from store.models import NoticeDelivery, utcnow
from store.notices import CLAIM, Notice, NoticeKind, list_deliveries, record_notice
from store.settings import Settings, load_settings
from store.status import JobStatus
from tests.standins.notices import TOKEN, MailServer, WebhookReceiver, make_certificate

PASSWORD = "smtp-Pa55-q7Zx4mW2"
USER = "lorapod-bot"
STAGES = ["preprocessing", "model_loading", "training", "evaluating", "uploading", "completed"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver()
    yield rec
    rec.close()


@pytest.fixture
def mail() -> Iterator[MailServer]:
    server = MailServer()
    yield server
    server.close()


def _settings(monkeypatch: pytest.MonkeyPatch, **values: Any) -> Settings:
    for name, value in values.items():
        monkeypatch.setenv(f"LORAPOD_{name.upper()}", str(value).lower() if isinstance(value, bool) else str(value))
    return load_settings()


def _both(monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver, mail: MailServer, **more: Any) -> Settings:
    return _settings(
        monkeypatch, notify_webhook_url=receiver.url, notify_smtp_host="127.0.0.1", notify_smtp_port=mail.port,
        notify_smtp_security="plain", notify_email_to="ops@example.com,me@example.com", **more,
    )  # fmt: skip


def _notice(key: str = "completed:test", kind: NoticeKind = NoticeKind.COMPLETED) -> Notice:
    return Notice(job_id=None, kind=kind, title="lorapod: job 1a2b3c4d completed", body="cost $1.20", key=key)


def _rows(ledger: Ledger, key: str) -> dict[str, NoticeDelivery]:
    return {row.channel: row for row in list_deliveries(ledger, key=key)}


def test_a_notice_reaches_the_webhook_and_the_mailbox_once_each(
    ledger: Ledger, receiver: WebhookReceiver, mail: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _both(monkeypatch, receiver, mail)
    outcomes = notify(ledger, settings, _notice())
    assert {(o.channel, o.sent, o.attempts) for o in outcomes} == {("webhook", True, 1), ("email", True, 1)}
    assert notify(ledger, settings, _notice()) == []
    other = Ledger(ledger.path)
    assert notify(other, settings, _notice()) == []
    other.close()

    (post,) = receiver.wait_for(1)
    assert post.payload == {"text": "*lorapod: job 1a2b3c4d completed*\ncost $1.20"}
    (message,) = mail.wait_for(1)
    assert message.rcpt_tos == ["ops@example.com", "me@example.com"]
    assert message.message["Subject"] == "lorapod: job 1a2b3c4d completed"
    assert message.message.get_payload().strip() == "cost $1.20"
    rows = _rows(ledger, "completed:test")
    assert {c: (r.status, r.attempts, r.last_error) for c, r in rows.items()} == {
        "webhook": ("sent", 1, None), "email": ("sent", 1, None),
    }  # fmt: skip
    assert all(r.sent_at is not None and r.next_attempt_at is None for r in rows.values())
    time.sleep(0.2)
    assert (receiver.tries, len(mail.mails)) == (1, 1)


def test_notify_from_many_ledger_handles_at_once_sends_once(
    ledger: Ledger, receiver: WebhookReceiver, mail: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _both(monkeypatch, receiver, mail)
    start = threading.Barrier(6)
    results: list[int] = []

    def send() -> None:
        handle = Ledger(ledger.path)
        start.wait()
        results.append(len(notify(handle, settings, _notice("budget:2026-11:0.8", NoticeKind.BUDGET))))
        handle.close()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 0, 0, 0, 0, 2]
    receiver.wait_for(1)
    mail.wait_for(1)
    time.sleep(0.2)
    assert (receiver.tries, len(receiver.posts), len(mail.mails)) == (1, 1, 1)


def test_a_failed_delivery_is_retried_when_due_and_its_tries_are_counted(
    ledger: Ledger, receiver: WebhookReceiver, mail: MailServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _both(monkeypatch, receiver, mail)
    receiver.answers = [500]
    outcomes = {o.channel: o for o in notify(ledger, settings, _notice())}
    assert outcomes["email"].sent and not outcomes["webhook"].sent
    assert "answered HTTP 500" in (outcomes["webhook"].error or "")
    failed = _rows(ledger, "completed:test")["webhook"]
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.next_attempt_at is not None and failed.next_attempt_at > utcnow()

    assert deliver_pending(ledger, settings) == []  # not due yet: the backoff holds it back
    (retried,) = deliver_pending(ledger, settings, now=utcnow() + timedelta(minutes=1))
    assert (retried.channel, retried.sent, retried.attempts) == ("webhook", True, 2)
    row = _rows(ledger, "completed:test")["webhook"]
    assert (row.status, row.attempts, row.next_attempt_at) == ("sent", 2, None)
    assert "HTTP 500" in (row.last_error or "")  # why the first try failed stays on record
    assert deliver_pending(ledger, settings, now=utcnow() + timedelta(days=1)) == []
    assert (receiver.tries, len(receiver.posts), len(mail.mails)) == (2, 1, 1)


def test_a_supervisors_loop_retries_due_deliveries_now_and_then(
    ledger: Ledger, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notices, "_retry_throttle", notices._Throttle(notices.RETRY_EVERY))
    settings = _settings(monkeypatch, notify_webhook_url=receiver.url)
    receiver.answers = [500]
    notify(ledger, settings, _notice())
    assert notices.retry_due(ledger, settings) is None  # looked: nothing due yet
    with ledger.write() as session:
        (row,) = session.exec(select(NoticeDelivery)).all()
        row.next_attempt_at = utcnow() - timedelta(seconds=1)
        session.add(row)
    assert notices.retry_due(ledger, settings) is None  # looked less than RETRY_EVERY ago
    monkeypatch.setattr(notices, "_retry_throttle", notices._Throttle(notices.RETRY_EVERY))
    thread = notices.retry_due(ledger, settings)
    assert thread is not None
    thread.join()
    assert len(receiver.wait_for(1)) == 1
    assert (_rows(ledger, "completed:test")["webhook"].status, receiver.tries) == ("sent", 2)


def test_a_delivery_is_given_up_after_the_allowed_tries(
    ledger: Ledger, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch, notify_webhook_url=receiver.url, notify_max_attempts=2)
    receiver.answers = [503, 503, 503]
    notify(ledger, settings, _notice())
    (second,) = deliver_pending(ledger, settings, now=utcnow() + timedelta(hours=2))
    assert not second.sent and second.attempts == 2
    row = _rows(ledger, "completed:test")["webhook"]
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 2, None)
    assert deliver_pending(ledger, settings, now=utcnow() + timedelta(days=2)) == []
    assert receiver.tries == 2


def test_a_notice_whose_sender_died_is_sent_once_its_claim_lapses(
    ledger: Ledger, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch, notify_webhook_url=receiver.url)
    assert record_notice(ledger, _notice(), ["webhook"])  # recorded and claimed, then the process died
    assert notify(ledger, settings, _notice()) == []
    assert deliver_pending(ledger, settings) == []  # the claim still holds: its sender may yet be sending
    (sent,) = deliver_pending(ledger, settings, now=utcnow() + CLAIM + timedelta(seconds=1))
    assert (sent.sent, sent.attempts) == (True, 2)
    assert len(receiver.wait_for(1)) == 1


def _no_secret_anywhere(ledger: Ledger, caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    # The test's own SMTP server logs what it receives ("mail.log"); lorapod's and httpx's records are checked.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail"))
    stored = "\n".join(f"{r.last_error} {r.title} {r.body}" for r in list_deliveries(ledger))
    for secret in secrets:
        assert secret not in logged
        assert secret not in stored


def test_the_webhook_token_never_reaches_the_log_or_the_ledger(
    ledger: Ledger, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _settings(monkeypatch, notify_webhook_url=receiver.url)
    receiver.answers = [404]  # the receiver's error text repeats the URL's path, token included
    (failed,) = notify(ledger, settings, _notice("a"))
    assert failed.error is not None and "answered HTTP 404" in failed.error and "<redacted>" in failed.error
    assert notify(ledger, settings, _notice("b"))[0].sent
    assert any("HTTP Request: POST" in r.getMessage() for r in caplog.records if r.name == "httpx")

    receiver.close()  # nothing listens there now: the connection is refused
    (refused,) = notify(ledger, settings, _notice("c"))
    assert refused.error is not None and "could not be reached" in refused.error
    assert "127.0.0.1" in refused.error
    for part in (TOKEN, *TOKEN.split("/")):
        _no_secret_anywhere(ledger, caplog, part)


def test_the_smtp_password_never_reaches_the_log_or_the_ledger(
    ledger: Ledger, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    server = MailServer(login=(USER, "the-right-password"), echo_failed_login=True)
    try:
        settings = _settings(
            monkeypatch, notify_smtp_host="127.0.0.1", notify_smtp_port=server.port, notify_smtp_security="plain",
            notify_smtp_user=USER, notify_smtp_password=PASSWORD, notify_email_to="ops@example.com",
        )  # fmt: skip
        (refused,) = notify(ledger, settings, _notice())
    finally:
        server.close()
    assert not refused.sent and refused.error is not None
    assert "refused the login of lorapod-bot" in refused.error and "<redacted>" in refused.error
    assert server.mails == []
    _no_secret_anywhere(ledger, caplog, PASSWORD)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_email_over_tls_with_a_login(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, security: str
) -> None:
    certificate = make_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the client trusts the test's certificate
    server = MailServer(security=security, login=(USER, PASSWORD), certificate=certificate)
    try:
        settings = _settings(
            monkeypatch, notify_smtp_host="127.0.0.1", notify_smtp_port=server.port, notify_smtp_security=security,
            notify_smtp_user=USER, notify_smtp_password=PASSWORD, notify_email_to="ops@example.com",
            notify_email_from="lorapod@example.com",
        )  # fmt: skip
        (outcome,) = notify(ledger, settings, _notice())
        assert outcome.sent, outcome.error
        (message,) = server.wait_for(1)
    finally:
        server.close()
    assert message.authenticated and message.mail_from == "lorapod@example.com"
    assert message.message["Subject"] == "lorapod: job 1a2b3c4d completed"


def _fake_notify_send(folder: Path, *, exit_code: int = 0) -> Path:
    folder.mkdir()
    script = folder / "notify-send"
    script.write_text(
        f'#!/bin/sh\nprintf \'%s\\0\' "$@" > "{folder}/args"\n'
        + (f"echo 'cannot reach the session bus' >&2\nexit {exit_code}\n" if exit_code else "")
    )
    script.chmod(0o755)
    return folder / "args"


def test_notify_send_shows_the_title_and_body_when_present(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = _fake_notify_send(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    settings = _settings(monkeypatch, notify_desktop=True)
    notice = Notice(None, NoticeKind.FAILED, "lorapod: job 1a2b3c4d failed", "error: OOM\nhint: halve", "failed:x")
    (outcome,) = notify(ledger, settings, notice)
    assert (outcome.channel, outcome.sent) == ("desktop", True)
    args = recorded.read_bytes().split(b"\0")[:-1]
    assert [a.decode() for a in args] == [
        "--app-name=lorapod", "--urgency=critical", "--", "lorapod: job 1a2b3c4d failed", "error: OOM\nhint: halve",
    ]  # fmt: skip

    _fake_notify_send(tmp_path / "broken", exit_code=1)
    monkeypatch.setenv("PATH", f"{tmp_path / 'broken'}:/usr/bin:/bin")
    (broken,) = notify(ledger, settings, _notice("completed:y"))
    assert not broken.sent and broken.error == "notify-send exited 1: cannot reach the session bus"


def test_without_notify_send_the_desktop_is_skipped_quietly(
    ledger: Ledger, receiver: WebhookReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    settings = _settings(monkeypatch, notify_desktop=True, notify_webhook_url=receiver.url)
    assert [o.channel for o in notify(ledger, settings, _notice())] == ["webhook"]
    assert set(_rows(ledger, "completed:test")) == {"webhook"}


# --- the supervisor's hooks ---------------------------------------------------------------------------------


class ScriptedProvider(Provider):
    """A provider whose runs replay scripted engine events: a run whose script ends without a terminal stage
    exits (the job is interrupted); one that ends in "hold" runs until cancelled."""

    name = "local"

    def __init__(self, runs: list[list[str]], rate_usd_per_hour: float = 0.0) -> None:
        self.runs, self.rate = runs, rate_usd_per_hour
        self.pending: list[dict[str, Any]] = []
        self.launched, self.seq, self.hold = 0, 0, False

    def _emit(self, stage: str, **extra: Any) -> None:
        self.seq += 1
        self.pending.append({"seq": self.seq, "ts": utcnow().isoformat(), "type": "stage", "stage": stage, **extra})

    def launch(
        self, job_id: uuid.UUID, spec: JobSpec, *, resume: bool = False, limits: Limits | None = None
    ) -> RunHandle:
        script = self.runs[self.launched]
        self.launched += 1
        self.hold = script[-1] == "hold"
        for stage in script[:-1] if self.hold else script:
            self._emit(stage)
        return RunHandle(provider="local", job_id=str(job_id), workdir=".", pid=self.launched)

    def state(self, handle: RunHandle) -> RunState:
        return RunState.RUNNING if self.pending or self.hold else RunState.EXITED

    def events(self, handle: RunHandle, after_seq: int) -> ScriptedProvider:
        return self

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        events, self.pending = self.pending, []
        if not events:
            time.sleep(timeout)
        return events

    def close(self) -> None:
        pass

    def cancel(self, handle: RunHandle, reason: str) -> None:
        self.hold = False
        self._emit("cancelled", message=reason)

    def logs(self, handle: RunHandle, offset: int = 0) -> tuple[str, int]:
        return "", offset

    def terminate(self, handle: RunHandle) -> None:
        self.hold = False

    def fetch_artifact(self, handle: RunHandle, name: str, dest: Path, *, sha256: str | None = None) -> Path:
        raise NotImplementedError

    def rate_usd_per_hour(self, handle: RunHandle | None, spec: JobSpec) -> float:
        return self.rate


def _supervise(ledger: Ledger, settings: Settings, provider: ScriptedProvider) -> uuid.UUID:
    job = create_job(ledger, presets.get("smoke").to_spec("d.json"), name="hooked")
    supervisor = Supervisor(ledger, settings, providers={"local": provider})
    supervisor.launch(job.id)
    supervisor.follow(job.id, poll=0.01)
    return job.id


def test_the_supervisor_tells_of_an_interruption_the_auto_resume_and_the_completion(
    ledger: Ledger, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch, notify_webhook_url=receiver.url, auto_resume=True)
    job_id = _supervise(ledger, settings, ScriptedProvider([STAGES[:3], STAGES]))
    posts = receiver.wait_for(3)
    titles = sorted(p.payload["text"].splitlines()[0] for p in posts)
    assert titles == [f"*lorapod: job {job_id.hex[:8]} “hooked” {what}*" for what in
                      ("completed", "resumed", "was interrupted")]  # fmt: skip
    keys = {r.key for r in list_deliveries(ledger, job_id=job_id)}
    assert keys == {f"interrupted:{job_id}:1", f"resumed:{job_id}:2", f"completed:{job_id}"}
    interrupted = next(p.payload["text"] for p in posts if "interrupted" in p.payload["text"])
    assert "without a terminal event" in interrupted and f"lorapod show {job_id.hex[:8]}" in interrupted


def test_the_supervisor_tells_of_a_limit_and_the_budget_alerts_not_of_the_cancel(
    ledger: Ledger, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("remote.follower.COST_EVERY", 0.02)
    monkeypatch.setattr("remote.follower.BACKSTOP_GRACE_S", 0.0)  # the supervisor's backstop, at once
    settings = _settings(monkeypatch, notify_webhook_url=receiver.url, hard_cap_usd=1, monthly_budget_usd=1)
    job_id = _supervise(ledger, settings, ScriptedProvider([[*STAGES[:3], "hold"]], rate_usd_per_hour=36_000))
    posts = receiver.wait_for(3)
    time.sleep(0.2)
    kinds = sorted(r.kind for r in list_deliveries(ledger))
    assert kinds == ["budget", "budget", "limit"] and len(receiver.posts) == 3
    limit = next(p.payload["text"] for p in posts if "stopped at a limit" in p.payload["text"])
    assert "hard cap" in limit
    assert {r.key for r in list_deliveries(ledger, job_id=job_id)} == {f"limit:{job_id}"}


def test_a_failed_job_is_told_with_its_error_and_a_cancelled_one_not_at_all(
    ledger: Ledger, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch, notify_webhook_url=receiver.url)
    failed = create_job(ledger, presets.get("smoke").to_spec("d.json"))
    transition(ledger, failed.id, JobStatus.PROVISIONING)
    transition(ledger, failed.id, JobStatus.FAILED, error_message="CUDA out of memory", error_hint="halve the batch")
    cancelled = create_job(ledger, presets.get("smoke").to_spec("d.json"))
    transition(ledger, cancelled.id, JobStatus.CANCELLED, error_message="cancelled by the user")
    notices.on_job_end(ledger, settings, cancelled.id)
    notices.on_job_end(ledger, settings, failed.id)
    (post,) = receiver.wait_for(1)
    lines = post.payload["text"].splitlines()
    assert lines[0] == f"*lorapod: job {failed.id.hex[:8]} failed*"
    assert lines[1:3] == ["error: CUDA out of memory", "hint: halve the batch"]
    time.sleep(0.2)
    assert [r.key for r in list_deliveries(ledger)] == [f"failed:{failed.id}"]


def test_without_channels_the_hooks_record_nothing(ledger: Ledger) -> None:
    settings = load_settings()
    job = create_job(ledger, presets.get("smoke").to_spec("d.json"))
    notices.on_job(ledger, settings, job.id, "failed")
    notices.on_budget(ledger, settings, "budget:2026-11:0.8")
    assert list_deliveries(ledger) == []
    assert job_notice(ledger, job.id, "failed").key == f"failed:{job.id}"

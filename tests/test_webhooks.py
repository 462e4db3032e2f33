"""Training webhooks: signed deliveries to a local receiver, retries, give-ups, a hanging receiver, replays."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.events import EventWriter, MetricsEvent, StageEvent, StatusEvent, WarningEvent, read_events
from engine.js_json import stringify
from engine.webhooks import SEED_STATUSES, WebhookSender, sign, verify_signature

SECRET = "whsec-test-4b9e1d"
FAST = (0.01, 0.02, 0.04)


class Receiver:
    """A webhook receiver on 127.0.0.1: answers with ``answers`` in turn (then 200), records every request."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.hold: threading.Event | None = None  # when set, requests wait for it (at most 10 s)
        self.in_flight = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.in_flight += 1
                    code = receiver.answers.pop(0) if receiver.answers else 200
                if receiver.hold is not None:
                    receiver.hold.wait(10)
                with receiver._lock:
                    receiver.in_flight -= 1
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/training?token=url-token-5c2f"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    if rec.hold is not None:
        rec.hold.set()
    rec.server.shutdown()
    rec.server.server_close()


def _event(event: Any, seq: int) -> dict[str, Any]:
    return event.model_copy(update={"seq": seq, "job_id": "job-1"}).model_dump(mode="json")


def _training_events() -> list[dict[str, Any]]:
    return [
        _event(StageEvent(stage="training"), 1),
        _event(
            MetricsEvent(step=10, total_steps=100, epoch=0.25, loss=1.5, learning_rate=2e-4, grad_norm=0.4, elapsed=9),
            2,
        ),
        _event(StatusEvent(step=10, total_steps=100, epoch=0.25, message="step 10/100"), 3),
        _event(StageEvent(stage="completed"), 4),
    ]


def test_deliveries_carry_the_seed_payload_and_verify(receiver: Receiver) -> None:
    warnings: list[WarningEvent] = []
    sender = WebhookSender(receiver.url, SECRET, warn=warnings.append, backoff=FAST)
    for event in _training_events():
        sender.on_event(event)
    sender.close(timeout=10)
    assert warnings == []
    assert [p["status"] for p in receiver.payloads()] == ["training", "training", "completed"]
    status = receiver.payloads()[1]
    assert list(status) == ["job_id", "status", "stage", "step", "total_steps", "metrics", "timestamp"]
    assert (status["job_id"], status["step"], status["total_steps"]) == ("job-1", 10, 100)
    assert status["metrics"] == {"loss": 1.5, "learning_rate": 2e-4, "grad_norm": 0.4, "epoch": 0.25}
    for headers, body in receiver.requests:
        assert verify_signature(body, headers["x-webhook-signature"], SECRET)
        stamp = datetime.fromisoformat(json.loads(body)["timestamp"])
        assert int(headers["x-webhook-timestamp"]) == int(stamp.timestamp())
    assert [h["x-webhook-id"] for h, _ in receiver.requests] == ["job-1:1", "job-1:3", "job-1:4"]


def test_statuses_speak_the_seeds_vocabulary_with_the_engines_stage_beside(receiver: Receiver) -> None:
    sender = WebhookSender(receiver.url, SECRET, warn=lambda _: None, backoff=FAST)
    stages = ["preprocessing", "model_loading", "training", "evaluating", "packaging", "uploading", "completed"]
    for seq, stage in enumerate(stages, start=1):
        sender.on_event(_event(StageEvent(stage=stage), seq))
    sender.close(timeout=10)
    sent = [(p["status"], p["stage"]) for p in receiver.payloads()]
    assert sent == [
        ("preprocessing", "preprocessing"),
        ("preprocessing", "model_loading"),
        ("model_loaded", "model_loading"),  # once loaded: the next stage has begun
        ("training", "training"),
        ("training", "evaluating"),
        ("training", "packaging"),
        ("training", "uploading"),
        ("completed", "completed"),
    ]
    assert {status for status, _ in sent} <= set(SEED_STATUSES)


def test_a_model_that_never_loaded_is_never_model_loaded(receiver: Receiver) -> None:
    sender = WebhookSender(receiver.url, SECRET, warn=lambda _: None, backoff=FAST)
    sender.on_event(_event(StageEvent(stage="model_loading"), 1))
    sender.on_event(_event(StageEvent(stage="failed"), 2))
    sender.close(timeout=10)
    assert [p["status"] for p in receiver.payloads()] == ["preprocessing", "failed"]


@pytest.mark.parametrize("style", ["seed", "prefixed"])
def test_the_signature_is_the_bare_hex_of_the_body_or_prefixed(receiver: Receiver, style: str) -> None:
    kwargs = {} if style == "seed" else {"signature": style}  # seed: the default
    sender = WebhookSender(receiver.url, SECRET, warn=lambda _: None, backoff=FAST, **kwargs)
    sender.on_event(_event(StageEvent(stage="training"), 1))
    sender.on_event(_event(MetricsEvent(step=1, total_steps=9, epoch=0.1, learning_rate=5e-05, loss=2.0, elapsed=1), 2))
    sender.on_event(_event(StatusEvent(step=1, total_steps=9, epoch=0.1, message="step 1/9"), 3))
    sender.close(timeout=10)
    headers, body = receiver.requests[-1]
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-webhook-signature"] == (digest if style == "seed" else f"sha256={digest}")
    assert verify_signature(body, headers["x-webhook-signature"], SECRET)
    # The body is what JSON.stringify writes for it: a Node receiver re-serialising it signs the same bytes.
    assert body == stringify(json.loads(body)).encode("utf-8")
    assert b'"learning_rate":0.00005' in body and b'"loss":2,' in body


def test_an_unknown_signature_style_is_refused() -> None:
    with pytest.raises(ValueError, match="webhook_signature must be one of seed, prefixed"):
        WebhookSender("http://127.0.0.1:9/", SECRET, warn=lambda _: None, signature="bare")


def test_pydantic_events_are_accepted_too(receiver: Receiver) -> None:
    sender = WebhookSender(receiver.url, SECRET, warn=lambda _: None, backoff=FAST)
    sender.on_event(StageEvent(stage="preprocessing", job_id="job-1"))
    sender.close(timeout=10)
    assert [(p["job_id"], p["status"]) for p in receiver.payloads()] == [("job-1", "preprocessing")]


def test_a_failing_delivery_is_retried_until_it_succeeds(receiver: Receiver) -> None:
    receiver.answers = [500, 500]
    warnings: list[WarningEvent] = []
    sender = WebhookSender(receiver.url, SECRET, warn=warnings.append, backoff=FAST)
    sender.on_event(_training_events()[0])
    sender.close(timeout=10)
    assert len(receiver.requests) == 3
    assert warnings == []
    assert len({h["x-webhook-id"] for h, _ in receiver.requests}) == 1  # one delivery, tried three times
    assert all(verify_signature(body, h["x-webhook-signature"], SECRET) for h, body in receiver.requests)


def test_a_delivery_that_gives_up_becomes_a_warning_event(receiver: Receiver, tmp_path: Path) -> None:
    receiver.answers = [503] * 10
    events = tmp_path / "events.jsonl"
    with EventWriter(events, "job-1") as writer:
        sender = WebhookSender(receiver.url, SECRET, warn=writer.emit, backoff=FAST)
        sender.on_event(_training_events()[0])
        sender.close(timeout=10)
    assert len(receiver.requests) == 4  # the first try and three retries
    (warning,) = [event for _, event in read_events(events)]
    assert (warning["type"], warning["code"], warning["job_id"]) == ("warning", "webhook_failed", "job-1")
    assert "HTTP 503" in warning["message"] and warning["details"]["tries"] == 4
    text = events.read_text()
    assert SECRET not in text and "url-token-5c2f" not in text and "/hooks/" not in text


def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.answers = [404]
    warnings: list[WarningEvent] = []
    sender = WebhookSender(receiver.url, SECRET, warn=warnings.append, backoff=FAST)
    sender.on_event(_training_events()[0])
    sender.close(timeout=10)
    assert len(receiver.requests) == 1
    assert [w.code for w in warnings] == ["webhook_failed"]


def test_an_unreachable_receiver_gives_up_with_a_warning() -> None:
    warnings: list[WarningEvent] = []
    sender = WebhookSender("http://127.0.0.1:9/hook", SECRET, warn=warnings.append, backoff=FAST, timeout=1)
    sender.on_event(_training_events()[0])
    sender.close(timeout=10)
    assert [w.code for w in warnings] == ["webhook_failed"]
    assert "ConnectError" in warnings[0].message


def test_a_hanging_receiver_never_holds_up_the_engine(receiver: Receiver) -> None:
    receiver.hold = threading.Event()
    warnings: list[WarningEvent] = []
    sender = WebhookSender(receiver.url, SECRET, warn=warnings.append, backoff=FAST, timeout=10, queue_size=8)
    sender.on_event(_event(StageEvent(stage="training"), 1))
    deadline = time.monotonic() + 10
    while not receiver.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    for step in range(1, 501):
        sender.on_event(_event(StatusEvent(step=step, total_steps=500, epoch=step / 500, message="…"), 1 + step))
    sender.on_event(_event(StageEvent(stage="completed"), 502))
    assert receiver.in_flight == 1  # every call above returned while the receiver still held the first request
    receiver.hold.set()
    sender.close(timeout=10)
    payloads = receiver.payloads()
    assert payloads[0]["status"] == "training"
    assert payloads[-1]["status"] == "completed"  # stage deliveries are never dropped
    assert len(payloads) <= 2 + 8
    assert [p["step"] for p in payloads[1:-1]] == list(range(494, 501))  # the newest status deliveries remain
    assert [w.code for w in warnings] == ["webhook_dropped"]


def test_close_gives_up_at_its_timeout_and_reports_what_was_not_sent(receiver: Receiver) -> None:
    receiver.hold = threading.Event()
    warnings: list[WarningEvent] = []
    sender = WebhookSender(receiver.url, SECRET, warn=warnings.append, backoff=FAST, timeout=10)
    sender.on_event(_event(StageEvent(stage="training"), 1))
    sender.on_event(_event(StageEvent(stage="failed"), 2))
    started = time.monotonic()
    sender.close(timeout=0.5)
    assert time.monotonic() - started < 5
    (warning,) = warnings
    assert warning.code == "webhook_failed"
    assert warning.details["statuses"] == ["training", "failed"]


def test_without_a_secret_deliveries_go_unsigned_with_one_warning(receiver: Receiver) -> None:
    warnings: list[WarningEvent] = []
    sender = WebhookSender(receiver.url, None, warn=warnings.append, backoff=FAST)
    for event in _training_events():
        sender.on_event(event)
    sender.close(timeout=10)
    assert len(receiver.requests) == 3
    assert all("x-webhook-signature" not in headers for headers, _ in receiver.requests)
    assert [w.code for w in warnings] == ["webhook_unsigned"]


def test_verify_signature_refuses_tampering_and_replays() -> None:
    signed_at = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    body = json.dumps({"job_id": "job-1", "status": "completed", "timestamp": signed_at.isoformat()}).encode()
    header = sign(body, SECRET)
    now = signed_at.timestamp()
    assert verify_signature(body, header, SECRET, now=now + 299)
    assert not verify_signature(body.replace(b"completed", b"failed"), header, SECRET, now=now)
    assert not verify_signature(body, header, "another-secret", now=now)
    assert not verify_signature(body, None, SECRET, now=now)
    assert not verify_signature(body, "sha256=" + "0" * 64, SECRET, now=now)
    assert not verify_signature(body, header, SECRET, now=now + 301)  # stale: a replay
    assert not verify_signature(body, header, SECRET, now=now - 301)  # from the future
    assert verify_signature(body, header, SECRET, now=now + 500, tolerance_s=600)
    unstamped = b'{"job_id": "job-1"}'
    assert not verify_signature(unstamped, sign(unstamped, SECRET), SECRET, now=now)


def test_a_webhook_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookSender("file:///etc/passwd", SECRET, warn=lambda _: None)

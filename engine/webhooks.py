"""Signed training webhooks: stage changes and status metrics, delivered from a background thread.

The engine hands every event to ``WebhookSender.on_event``, which returns at once: stage events, and each
status event with the latest metrics, are queued and POSTed by a thread of their own, with retries. The body
is the seed's payload, with the engine's own stage beside the seed's status::

    {"job_id":"…","status":"training","stage":"evaluating","step":120,"total_steps":900,
     "metrics":{"loss":1.23,"learning_rate":0.0002,"grad_norm":0.41,"epoch":0.4},
     "timestamp":"2026-11-22T10:00:00.123456+00:00"}

``status`` speaks the seed's vocabulary (queued, preprocessing, model_loaded, training, completed, failed,
cancelled): model loading is still ``preprocessing``, and ``model_loaded`` is sent once it is done, before the
next stage; evaluating, packaging and uploading are ``training`` until the job completes. The body is written
exactly as ``JSON.stringify`` writes the parsed payload (engine.js_json), so a Node receiver that re-serialises
what it parsed signs the same bytes.

Each delivery is signed when a secret is set, with the HMAC-SHA256 of the exact body bytes under
``TRAINING_WEBHOOK_SECRET``: ``X-Webhook-Signature`` is its bare hex (``webhook_signature = "seed"``, the
default: the seed's contract) or ``sha256=<hex>`` (``"prefixed"``, GitHub's style). ``X-Webhook-Timestamp``
repeats, in Unix seconds, the body's ``timestamp`` (the time of signing, fresh on every try). Receivers check
both with ``verify_signature`` (either style; it reads the time from the signed body, so a replayed body is
refused once it is old). ``X-Webhook-Id`` (job and seq) is the same on every try of one delivery, for
receivers that want to ignore duplicates.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from engine.events import WarningEvent
from engine.js_json import stringify

SECRET_VARIABLE = "TRAINING_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
ID_HEADER = "X-Webhook-Id"
QUEUE_SIZE = 256
_RETRIED_CLIENT_ERRORS = frozenset({408, 425, 429})
SIGNATURE_STYLES = ("seed", "prefixed")
SEED_STATUSES = ("queued", "preprocessing", "model_loaded", "training", "completed", "failed", "cancelled")
# The engine's stages in the seed's words; the stage itself travels beside the status.
_SEED_STATUS = {
    "preprocessing": "preprocessing", "model_loading": "preprocessing", "training": "training",
    "evaluating": "training", "packaging": "training", "uploading": "training",
    "completed": "completed", "failed": "failed", "cancelled": "cancelled",
}  # fmt: skip

log = logging.getLogger("engine.webhooks")


def sign(body: bytes, secret: str, style: str = "seed") -> str:
    """The ``X-Webhook-Signature`` value of ``body``: the hex HMAC-SHA256 under ``secret``, bare or ``sha256=``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return digest if style == "seed" else f"sha256={digest}"


def seed_status(stage: str | None) -> str:
    """The seed's status for an engine stage (None, before the first stage: queued)."""
    return _SEED_STATUS.get(stage or "", "queued")


def verify_signature(
    body: bytes, header: str | None, secret: str, *, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """Whether a webhook is genuine and fresh: for receivers.

    ``body`` is the request body exactly as received (bytes, before any JSON parsing), ``header`` the
    ``X-Webhook-Signature`` value, in either style. True only when the signature matches (compared in
    constant time) and the ``timestamp`` inside the signed body lies within ``tolerance_s`` seconds of ``now``
    (default: the clock), so a captured delivery cannot be replayed later. Receivers that must not act twice
    also remember the ``X-Webhook-Id`` values they have seen within the tolerance.
    """
    if not header or not secret:
        return False
    given = header.strip().removeprefix("sha256=")
    if not hmac.compare_digest(given.encode("utf-8"), sign(body, secret).encode("utf-8")):
        return False
    try:
        stamp = datetime.fromisoformat(json.loads(body)["timestamp"])
    except (ValueError, KeyError, TypeError):
        return False
    if stamp.tzinfo is None:
        return False
    return abs((time.time() if now is None else now) - stamp.timestamp()) <= tolerance_s


@dataclass
class _Delivery:
    kind: str  # "stage" or "status"
    key: str
    payload: dict[str, Any]


class WebhookSender:
    """Delivers a job's stage and status webhooks without ever holding up the engine.

    ``warn`` receives a ``WarningEvent`` when a delivery gives up (``webhook_failed``), when status deliveries
    are dropped because the receiver falls behind (``webhook_dropped``, once), and, without a secret, that
    receivers cannot verify the deliveries (``webhook_unsigned``). It is called from the sender's thread, never
    two at a time: give it a callable that may run beside the engine's, such as the ``emit`` of an
    ``EventWriter`` of its own on the job's events file.
    """

    def __init__(
        self,
        url: str,
        secret: str | None,
        *,
        warn: Callable[[WarningEvent], object],
        backoff: Sequence[float] = (1, 2, 4),
        timeout: float = 10,
        queue_size: int = QUEUE_SIZE,
        signature: str = "seed",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook_url must be an http(s) URL")
        if signature not in SIGNATURE_STYLES:
            raise ValueError(f"webhook_signature must be one of {', '.join(SIGNATURE_STYLES)}, not {signature!r}")
        self._signature = signature
        self._url = url
        self._host = parts.hostname  # the only part of the URL messages show: the rest may carry a token
        self._secret = secret or None
        self._warn_callback = warn
        self._backoff = tuple(backoff)
        self._queue_size = queue_size
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._queue: deque[_Delivery] = deque()
        self._cond = threading.Condition()
        self._busy: _Delivery | None = None
        self._closing = False
        self._abandon = threading.Event()
        self._warn_lock = threading.Lock()
        self._dropped = 0
        self._drop_reported = False
        self._silenced = False
        self._state: dict[str, Any] = {"job_id": "", "stage": None, "step": None, "total_steps": None}
        self._metrics: dict[str, Any] = {"loss": None, "learning_rate": None, "grad_norm": None, "epoch": None}
        self._thread = threading.Thread(target=self._run, name="lorapod-webhooks", daemon=True)
        self._thread.start()

    def on_event(self, event: dict[str, Any] | BaseModel) -> None:
        """Note an engine event; queue a delivery for stage and status events. Returns at once."""
        data = event.model_dump(mode="json") if isinstance(event, BaseModel) else event
        kind = data.get("type")
        with self._cond:
            before = self._state["stage"]
            self._track(data)
            if kind not in ("stage", "status") or self._closing:
                return
            job = self._state["job_id"]
            if kind == "stage":
                stage = data.get("stage")
                if before == "model_loading" and stage not in ("model_loading", "failed", "cancelled"):
                    self._enqueue(_Delivery("stage", f"{job}:model_loaded", self._payload("model_loaded", before)))
                payload = self._payload(seed_status(stage), stage)
                key = f"{job}:{data.get('seq') or stage}"
            else:
                stage = self._state["stage"] or "training"
                payload = self._payload(seed_status(stage), stage)
                key = f"{job}:{data.get('seq') or 'step-' + str(self._state['step'])}"
            self._enqueue(_Delivery(kind, key, payload))
            self._cond.notify_all()

    def _payload(self, status: str, stage: str | None) -> dict[str, Any]:
        return {
            "job_id": self._state["job_id"],
            "status": status,
            "stage": stage,
            "step": self._state["step"],
            "total_steps": self._state["total_steps"],
            "metrics": dict(self._metrics),
        }

    def _track(self, data: dict[str, Any]) -> None:
        self._state["job_id"] = data.get("job_id") or self._state["job_id"]
        if data.get("type") == "stage":
            self._state["stage"] = data.get("stage")
        for key in ("step", "total_steps"):
            if data.get(key) is not None:
                self._state[key] = data[key]
        if data.get("type") == "metrics":
            for key in self._metrics:
                if data.get(key) is not None:
                    self._metrics[key] = data[key]
        elif data.get("epoch") is not None:
            self._metrics["epoch"] = data["epoch"]

    def _enqueue(self, delivery: _Delivery) -> None:
        """Append, keeping the queue bounded by dropping the oldest status deliveries (never a stage one)."""
        if len(self._queue) >= self._queue_size:
            oldest = next((d for d in self._queue if d.kind == "status"), None)
            if oldest is not None:
                self._queue.remove(oldest)
                self._dropped += 1
            elif delivery.kind == "status":
                self._dropped += 1
                return
        self._queue.append(delivery)

    def close(self, timeout: float = 30) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, then stop; reports what was not sent."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._queue or self._busy) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            unsent = [d for d in [self._busy, *self._queue] if d is not None]
            self._queue.clear()
            self._abandon.set()
            self._cond.notify_all()
        self._thread.join(max(0.0, min(1.0, deadline - time.monotonic())))
        stages = [d.payload["status"] for d in unsent if d.kind == "stage"]
        if stages:
            self._warn(
                "webhook_failed",
                f"{len(stages)} webhook(s) to {self._host} were not delivered before the job ended",
                {"statuses": stages, "undelivered": len(unsent)},
            )
        with self._warn_lock:
            self._silenced = True  # a try still hanging when close() returns is counted above
        self._client.close()

    def _warn(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        with self._warn_lock:
            if self._silenced:
                return
            log.warning("%s: %s", code, message)
            try:
                self._warn_callback(WarningEvent(code=code, message=message, details=details or {}))
            except Exception:  # a failing callback must not end deliveries
                log.exception("the webhook warning callback failed")

    def _run(self) -> None:
        if self._secret is None:
            self._warn(
                "webhook_unsigned",
                f"{SECRET_VARIABLE} is not set: webhooks to {self._host} go unsigned, and receivers cannot "
                "verify that they come from this job",
            )
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._abandon.is_set():
                    return
                self._busy = self._queue.popleft()
                report_drops = self._dropped > 0 and not self._drop_reported
                self._drop_reported = self._drop_reported or report_drops
            if report_drops:
                self._warn(
                    "webhook_dropped",
                    f"the webhook receiver at {self._host} falls behind: older status webhooks are being "
                    "dropped (stage webhooks never are)",
                )
            try:
                self._deliver(self._busy)
            except Exception:  # the thread must outlive any one delivery
                log.exception("a webhook delivery failed unexpectedly")
            with self._cond:
                self._busy = None
                self._cond.notify_all()

    def _deliver(self, delivery: _Delivery) -> None:
        """POST one delivery, retrying after failures with the backoff; warns when it gives up."""
        problem = ""
        for attempt in range(len(self._backoff) + 1):
            if attempt and self._abandon.wait(self._backoff[attempt - 1]):
                return  # close() ran out of time; it reports what was left
            problem, retry = self._post(delivery)
            if not problem:
                return
            if not retry:
                break
        if not self._abandon.is_set():
            self._warn(
                "webhook_failed",
                f"the {delivery.payload['status']} webhook to {self._host} failed after {attempt + 1} tries: {problem}",
                {"status": delivery.payload["status"], "step": delivery.payload["step"], "tries": attempt + 1},
            )

    def _post(self, delivery: _Delivery) -> tuple[str, bool]:
        """One try: an empty problem on success, else what went wrong and whether trying again may help."""
        signed_at = datetime.now(UTC)
        data = stringify({**delivery.payload, "timestamp": signed_at.isoformat()}).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "lorapod-webhooks",
            TIMESTAMP_HEADER: str(int(signed_at.timestamp())),
            ID_HEADER: delivery.key,
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(data, self._secret, self._signature)
        try:
            response = self._client.post(self._url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}", True
        with contextlib.suppress(httpx.HTTPError):
            response.close()
        if response.is_success:
            return "", False
        code = response.status_code
        return f"HTTP {code}", code >= 500 or code in _RETRIED_CLIENT_ERRORS

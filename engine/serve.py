"""The pod API: one HTTP port for a job's status, events, logs and artifacts, its dataset upload, and cancel.

``python -m engine serve`` runs it beside the engine, behind RunPod's HTTPS proxy, whose 100-second request
limit bounds every wait here. Every route but ``/health`` needs ``Authorization: Bearer <token>``, the
token coming from ``LORAPOD_POD_TOKEN``, or only its sha256 from ``LORAPOD_POD_TOKEN_SHA256`` (what a RunPod
pod's environment holds: RunPod shows that environment to whoever reads the account, and a hash opens nothing).
``PUT /secrets`` takes the job's secrets once (``engine.pod_secrets``). The routes, with curl examples, are in
docs/pod-api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.checksums import sha256_file
from engine.event_log import EventLog
from engine.events import EventWriter, LogEvent
from engine.inputs import UploadRefused, receive_input
from engine.pod_secrets import SecretsInbox, token_sha256
from engine.workdir import Workdir

TOKEN_VARIABLE = "LORAPOD_POD_TOKEN"
TOKEN_SHA256_VARIABLE = "LORAPOD_POD_TOKEN_SHA256"
PUBLIC_PATHS = frozenset({"/health"})
DEFAULT_WAIT_S = 25.0
MAX_WAIT_S = 60.0
SSE_SECONDS = 55.0  # a stream ends itself well inside the proxy's 100 s; EventSource clients reconnect
KEEPALIVE_SECONDS = 15.0
POLL_SECONDS = 0.2
RETRY_MS = 1000
MAX_LOG_CHUNK = 1024 * 1024
HASH_WAIT_S = 20.0  # a 100 GB package takes minutes to hash: the listing says "pending" rather than wait
DEFAULT_EVENTS_LIMIT = 1000
MAX_EVENTS_LIMIT = 10_000
_PACKAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_UNFINISHED_SUFFIXES = (".tmp", ".part", ".partial")
_SHA256 = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger("engine.serve")


def bearer_digest() -> str | None:
    """The sha256 a request's bearer token must hash to: that of ``LORAPOD_POD_TOKEN`` (a process on this
    machine), else ``LORAPOD_POD_TOKEN_SHA256`` as a pod is given it; None when neither is set."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    digest = token_sha256(token) if token else os.environ.get(TOKEN_SHA256_VARIABLE, "").strip().lower()
    return digest if _SHA256.fullmatch(digest) else None


class _BearerAuth:
    """Answers 401, and nothing else, to any request outside PUBLIC_PATHS without the right bearer token.

    Unknown paths get the same 401 as real ones, so an unauthenticated caller learns nothing of the routes.
    """

    def __init__(self, app: ASGIApp, token_sha256: str) -> None:
        self.app = app
        self._digest = token_sha256.encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse({"detail": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = bytes(value).partition(b" ")
                digest = hashlib.sha256(given.strip()).hexdigest().encode("ascii")
                return scheme.lower() == b"bearer" and hmac.compare_digest(digest, self._digest)
        return False


class Checksums:
    """sha256 of package files, computed once per (name, size, mtime) on a daemon thread of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int], Future[str]]] = {}

    def get(self, path: Path, st: os.stat_result) -> Future[str]:
        key = (st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(path.name)
            if cached and cached[0] == key and not (cached[1].done() and cached[1].exception()):
                return cached[1]
            future: Future[str] = Future()
            self._cache[path.name] = (key, future)

        def work() -> None:
            try:
                future.set_result(sha256_file(path))
            except OSError as exc:
                future.set_exception(exc)

        threading.Thread(target=work, name="lorapod-sha256", daemon=True).start()
        return future


def package_path(packages: Path, name: str) -> Path | None:
    """The package file called ``name``: a plain file name of packages/, never a link or anything outside."""
    if not _PACKAGE_NAME.fullmatch(name) or name.endswith(_UNFINISHED_SUFFIXES):
        return None
    path = packages / name
    if path.is_symlink() or not path.is_file() or path.resolve().parent != packages.resolve():
        return None
    return path


def _utf8_prefix(data: bytes) -> int:
    """The length of ``data`` without a multi-byte character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:
            width = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= width else len(data) - back
    return len(data)


def read_log(path: Path, offset: int, limit: int) -> dict[str, Any] | None:
    """A chunk of the log from byte ``offset``, or None when ``offset`` lies past its end."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return None if offset else {"offset": 0, "next_offset": 0, "size": 0, "eof": True, "data": ""}
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if offset > size:
            return None
        handle.seek(offset)
        data = handle.read(limit)
    if offset + len(data) < size:  # more follows: leave a character cut in two for the next chunk
        data = data[: _utf8_prefix(data) or len(data)]
    end = offset + len(data)
    text = data.decode("utf-8", errors="replace")
    return {"offset": offset, "next_offset": end, "size": size, "eof": end >= size, "data": text}


class CancelBody(BaseModel):
    reason: str | None = Field(None, max_length=500, description="why, in a few words: kept in control/cancel")


def _sse(event: dict[str, Any]) -> str:
    return f"id: {event['seq']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def _last_event_id(request: Request) -> int | None:
    try:
        return max(0, int(request.headers["last-event-id"]))
    except (KeyError, ValueError):
        return None


class PodAPI:
    """The routes' state and handlers: one job's workdir, its events, checksums and the pids signalled."""

    def __init__(self, workdir: Path, *, sse_seconds: float, keepalive_seconds: float, poll_seconds: float) -> None:
        self.work = Workdir(workdir)
        self.events = EventLog(self.work.events)
        self.checksums = Checksums()
        self.sse_seconds = sse_seconds
        self.keepalive_seconds = keepalive_seconds
        self.poll_seconds = poll_seconds
        self._signalled: set[int] = set()
        self._signal_lock = threading.Lock()

    def health(self) -> dict[str, bool]:
        return {"ok": True}

    def status(self) -> dict[str, Any]:
        current = self.events.refresh()
        pid = self.work.running_pid()
        return {
            **asdict(current),
            "terminal": current.terminal,
            "engine_pid": pid,
            "engine_running": pid is not None,
            "cancel_requested": self.work.cancel_requested(),
            "engine_exit": self._engine_exit(),
        }

    def _engine_exit(self) -> dict[str, Any] | None:
        """How the engine ended, as the pod's entrypoint noted it (None while it runs, or outside a pod)."""
        try:
            found = json.loads(self.work.engine_exit.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    async def get_events(
        self,
        request: Request,
        after: int = Query(0, ge=0, description="return the events with a seq above this"),
        wait: float = Query(DEFAULT_WAIT_S, ge=0, le=MAX_WAIT_S, description="seconds to wait for new events"),
        limit: int = Query(DEFAULT_EVENTS_LIMIT, ge=1, le=MAX_EVENTS_LIMIT),
    ) -> Response:
        if "text/event-stream" in request.headers.get("accept", ""):
            start = _last_event_id(request)
            body = self._stream(after if start is None else start, limit)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(body, media_type="text/event-stream", headers=headers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            found = await self.events.after(after, limit)
            remaining = deadline - loop.time()
            if found or remaining <= 0 or await request.is_disconnected():
                return JSONResponse(found)
            await asyncio.sleep(min(self.poll_seconds, remaining))

    async def _stream(self, after: int, limit: int) -> AsyncIterator[str]:
        """Server-sent events from seq ``after`` on, with keep-alive comments, ending after sse_seconds."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.sse_seconds
        yield f"retry: {RETRY_MS}\n\n"
        quiet_since = loop.time()
        while loop.time() < ends:
            found = await self.events.after(after, limit)
            for event in found:
                after = int(event["seq"])
                yield _sse(event)
            if found:
                quiet_since = loop.time()
                continue
            if loop.time() - quiet_since >= self.keepalive_seconds:
                yield ": keep-alive\n\n"
                quiet_since = loop.time()
            await asyncio.sleep(min(self.poll_seconds, max(0.0, ends - loop.time())))
        yield ": reconnect\n\n"

    def logs(
        self,
        offset: int = Query(0, ge=0, description="the byte to read from"),
        limit: int = Query(MAX_LOG_CHUNK, ge=1, le=MAX_LOG_CHUNK),
    ) -> Response:
        chunk = read_log(self.work.log_file, offset, limit)
        if chunk is None:
            size = self.work.log_file.stat().st_size if self.work.log_file.exists() else 0
            return JSONResponse({"detail": "offset is past the end of the log", "size": size}, status_code=416)
        return JSONResponse(chunk)

    def cancel(self, body: CancelBody | None = None) -> dict[str, Any]:
        given = " ".join((body.reason or "").split()) if body else ""
        reason = given or "requested through the pod API"
        current = self.events.refresh()
        pid = self.work.running_pid()
        previous = self.work.cancel_requested()
        done: dict[str, Any] = {
            "requested": False,
            "already_requested": previous is not None,
            "signalled_pid": None,
            "engine_running": pid is not None,
            "reason": previous or reason,
            "stage": current.stage,
            "terminal": current.terminal,
        }
        if current.terminal and pid is None:
            return {**done, "message": f"the job has already ended ({current.stage}); nothing to cancel"}
        if previous is None:
            self.work.request_cancel(reason)
            done["requested"] = True
            if current.job_id:
                with EventWriter(self.work.events, current.job_id) as writer:
                    note = f": {given}" if given else ""
                    writer.emit(LogEvent(message=f"cancel requested through the pod API{note}"))
        with self._signal_lock:
            # Once per engine process: a second SIGTERM may mean "stop now" to it, and cancel is idempotent.
            if pid is not None and pid not in self._signalled and pid not in (os.getpid(), 1):
                try:
                    os.kill(pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError) as exc:  # it ended meanwhile, or is not ours
                    log.warning("cancel: engine pid %d not signalled (%s)", pid, type(exc).__name__)
                else:
                    self._signalled.add(pid)
                    done["signalled_pid"] = pid
        return {**done, "message": "cancel requested" if done["requested"] else "cancel was already requested"}

    async def artifacts(self) -> dict[str, Any]:
        packages = self.work.packages
        found: list[tuple[Path, os.stat_result]] = []
        if packages.is_dir():
            for name in sorted(entry.name for entry in os.scandir(packages)):
                path = package_path(packages, name)
                if path is not None:
                    with contextlib.suppress(FileNotFoundError):
                        found.append((path, path.stat()))
        futures = [self.checksums.get(path, st) for path, st in found]
        if futures:
            await asyncio.wait([asyncio.wrap_future(f) for f in futures], timeout=HASH_WAIT_S)
        listing = []
        for (path, st), future in zip(found, futures, strict=True):
            ready = future.done() and future.exception() is None
            listing.append(
                {
                    "name": path.name,
                    "size": st.st_size,
                    "modified": datetime.fromtimestamp(st.st_mtime, UTC).isoformat(),
                    "sha256": future.result() if ready else None,
                    "sha256_pending": not future.done(),
                }
            )
        return {"artifacts": listing}

    async def put_input(self, name: str, request: Request) -> Response:
        """Store an uploaded input file (the dataset) in inputs/, only whole and with the sha256 announced."""
        expected = request.headers.get("x-content-sha256", "").strip().lower()
        if not _PACKAGE_NAME.fullmatch(name) or name.endswith(_UNFINISHED_SUFFIXES):
            return JSONResponse({"detail": "not a plain file name"}, status_code=400)
        if not _SHA256.fullmatch(expected):
            return JSONResponse({"detail": "the X-Content-SHA256 header (64 hex digits) is required"}, 400)
        try:
            size = await receive_input(self.work.inputs, name, expected, request.stream())
        except UploadRefused as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status)
        except ClientDisconnect:
            log.warning("upload of inputs/%s cut off: the client disconnected before the whole body came", name)
            return Response(status_code=400)  # nobody is left to read it
        return JSONResponse({"name": name, "size": size, "sha256": expected}, status_code=201)

    def artifact(self, name: str) -> Response:
        path = package_path(self.work.packages, name)
        if path is None:
            return JSONResponse({"detail": "not found"}, status_code=404)
        return FileResponse(path, filename=path.name, media_type="application/zip", stat_result=path.stat())


def create_app(
    workdir: Path,
    token: str = "",
    *,
    token_sha256_hex: str = "",
    inbox: SecretsInbox | None = None,
    sse_seconds: float = SSE_SECONDS,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    poll_seconds: float = POLL_SECONDS,
) -> FastAPI:
    """The pod API for the job in ``workdir``; requests must carry ``token`` (or the token whose sha256 is
    ``token_sha256_hex``) as their bearer token. With an ``inbox``, ``PUT /secrets`` takes one delivery."""
    digest = token_sha256(token) if token else token_sha256_hex.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError("the pod API needs a token")
    pod = PodAPI(workdir, sse_seconds=sse_seconds, keepalive_seconds=keepalive_seconds, poll_seconds=poll_seconds)
    # No OpenTelemetry export from the pod, whatever the image's environment says: requests carry the token.
    off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    app = FastAPI(title="lorapod pod API", docs_url=None, redoc_url=None, openapi_url=None, telemetry=off)
    app.add_middleware(_BearerAuth, token_sha256=digest)
    app.add_api_route("/health", pod.health, methods=["GET"])
    app.add_api_route("/status", pod.status, methods=["GET"])
    app.add_api_route("/events", pod.get_events, methods=["GET"])
    app.add_api_route("/logs", pod.logs, methods=["GET"])
    app.add_api_route("/cancel", pod.cancel, methods=["POST"])
    app.add_api_route("/artifacts", pod.artifacts, methods=["GET"])
    app.add_api_route("/artifacts/{name}", pod.artifact, methods=["GET"])
    app.add_api_route("/inputs/{name}", pod.put_input, methods=["PUT"])
    if inbox is not None:

        async def put_secrets(request: Request) -> Response:
            return await inbox.receive(request)

        app.add_api_route("/secrets", put_secrets, methods=["PUT"])
    return app


def main(workdir: Path, *, port: int, host: str) -> int:
    """Serve the pod API for ``workdir`` until SIGTERM or Ctrl-C; 2 when no token is set."""
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    digest = os.environ.get(TOKEN_SHA256_VARIABLE, "").strip().lower()
    if not token and not _SHA256.fullmatch(digest):
        print(
            f"error: {TOKEN_VARIABLE} is not set (nor {TOKEN_SHA256_VARIABLE}); the pod API refuses to serve "
            "without a bearer token "
            f'(generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))")',
            file=sys.stderr,
        )
        return 2
    import uvicorn

    config = uvicorn.Config(
        create_app(workdir, token, token_sha256_hex=digest, inbox=SecretsInbox.from_env(workdir)),
        host=host,
        port=port,
        log_level="info",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for the handler it found:
    # a quiet one here makes that shutdown exit 0 rather than die by the signal (or a KeyboardInterrupt).
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


def _ignore(signum: int, frame: object) -> None:
    """A signal handler that does nothing."""

"""The merge pod: a finished RunPod job's adapter merged into its base model on a pod, and the merged files
served to the machine that asked for them.

``python -m engine pod`` runs this in place of a job when ``LORAPOD_MERGE=1``. It merges the job's adapter
(its workdir on the network volume) into the base weights already in the volume's Hugging Face cache, with
``python -m engine merge`` in a subprocess, into ``merged/`` beside the adapter; writes a manifest (each file's
name, size and sha256); serves the files with HTTP Range, so a cut download resumes where it stopped; and
deletes its own pod once the client says it has them, or once the client has been silent for ``LORAPOD_LINGER_S``
(a download under way is not silence). The
watchdog deletes it after ``LORAPOD_MAX_SECONDS`` whatever happens. No secret reaches this pod. On RunPod's stock
image it cooperates with lorapod's start as a playground pod does: it notes its pid (``control/pod.pid``, what
the SSH readiness check looks for) and takes the hand-over's delivery, which carries no secret.

Routes (all but ``/health`` need ``Authorization: Bearer <token>``, the pod API's token)::

    GET  /health              {"ok": true, "merge": true, "state": "merging" | "merged" | "failed"}
    GET  /merge               {"state", "reason", "seconds", "base_model", "files": [{"name", "size", "sha256"}…]}
    GET  /merge/files/{name}  one merged file (Range requests answered 206)
    POST /merge/done          {"keep": false}: the client has the files; the pod deletes them (unless keep)
                              and itself
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.checksums import sha256_file
from engine.config import JobSpec
from engine.serve import _SHA256, PUBLIC_PATHS, _BearerAuth, bearer_digest
from engine.workdir import Workdir

log = logging.getLogger("engine.merge_pod")

MERGED_FOLDER = "merged"
MANIFEST = "merged.manifest.json"  # beside merged/, so it is never taken for one of the model's files
State = Literal["merging", "merged", "failed"]


class Merge:
    """One merge of a job's adapter: its state, its manifest once done, and the client's word that it is over."""

    def __init__(
        self,
        workdir: Workdir,
        models_dir: Path,
        python: str = sys.executable,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workdir = workdir
        self.models_dir = models_dir
        self.python = python
        self.out = workdir.root / MERGED_FOLDER
        self.manifest_path = workdir.root / MANIFEST
        self.state: State = "merging"
        self.reason: str | None = None
        self.base_model: str | None = None
        self.files: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.seconds: float | None = None
        self.ended = threading.Event()  # merged or failed
        self.released = threading.Event()  # the client is done with it
        self.process: subprocess.Popen[str] | None = None
        self.clock = clock
        self.requests = 0  # the client's requests under way: a file of many GB downloads for longer than the linger
        self.last_request = clock()

    def idle_s(self) -> float:
        """How long the client has been silent: no request under way, none since."""
        return 0.0 if self.requests else self.clock() - self.last_request

    def describe(self) -> dict[str, Any]:
        seconds = self.seconds if self.seconds is not None else time.monotonic() - self.started
        return {"state": self.state, "reason": self.reason, "seconds": round(seconds, 1),
                "base_model": self.base_model, "files": self.files}  # fmt: skip

    def run(self) -> None:
        """Merge (or take the merge an earlier pod left complete), then note how it ended."""
        try:
            self._run()
        except Exception as exc:  # reported through the API: the client shows it and deletes the pod
            log.exception("the merge failed")
            self._end("failed", f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        try:
            spec = JobSpec.model_validate_json(self.workdir.spec.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            self._end("failed", f"{self.workdir.spec}: the job's spec cannot be read ({type(exc).__name__})")
            return
        self.base_model = spec.base_model
        if self._reuse():
            log.info("the merge in %s is complete already (every file matches its manifest): serving it", self.out)
            self._end("merged")
            return
        self.manifest_path.unlink(missing_ok=True)
        shutil.rmtree(self.out, ignore_errors=True)  # what a cut-off merge left: half a model is no model
        command = [self.python, "-m", "engine", "merge", "--adapter", str(self.workdir.adapter),
                   "--base", spec.base_model, "--out", str(self.out), "--models-dir", str(self.models_dir)]  # fmt: skip
        log.info("merging %s into %s", self.workdir.adapter, spec.base_model)
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        _, stderr = self.process.communicate()
        if self.process.returncode != 0:
            sys.stderr.write(stderr[-20_000:])  # the container's log keeps the traceback
            lines = [line for line in stderr.splitlines() if line.strip()]
            reason = next((ln.removeprefix("error: ") for ln in reversed(lines) if ln.startswith("error: ")), None)
            self._end("failed", reason or (lines[-1] if lines else f"the merge exited {self.process.returncode}"))
            return
        files = [
            {"name": p.relative_to(self.out).as_posix(), "size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(self.out.rglob("*"))
            if p.is_file()
        ]
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"base_model": spec.base_model, "files": files}), encoding="utf-8")
        tmp.replace(self.manifest_path)
        self.files = files
        self._end("merged")

    def _reuse(self) -> bool:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            files = list(manifest["files"])
            # Every byte checked: a file damaged since would fail every download of it.
            complete = manifest.get("base_model") == self.base_model and all(
                (self.out / f["name"]).stat().st_size == f["size"] and sha256_file(self.out / f["name"]) == f["sha256"]
                for f in files
            )
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if complete:
            self.files = files
        return complete

    def _end(self, state: State, reason: str | None = None) -> None:
        self.state, self.reason = state, reason
        self.seconds = time.monotonic() - self.started
        self.last_request = max(self.last_request, self.clock())  # the linger counts from here at the earliest
        log.info("merge %s%s after %.0f s", state, f": {reason}" if reason else "", self.seconds)
        self.ended.set()

    def file(self, name: str) -> Path | None:
        """The merged file called ``name`` in the manifest; nothing else of the volume is served."""
        if self.state != "merged" or name not in {f["name"] for f in self.files}:
            return None
        path = self.out / name
        return path if path.is_file() and not path.is_symlink() else None

    def release(self, *, keep: bool) -> None:
        """The client is done: the merged files are removed from the volume unless it asks to keep them."""
        if not keep and self.ended.is_set():
            self.manifest_path.unlink(missing_ok=True)
            shutil.rmtree(self.out, ignore_errors=True)
        self.released.set()


class _Activity:
    """Counts the client's requests under way and notes when the last ended (``Merge.idle_s``); a finally
    block, so a download cut off by the client ends too."""

    def __init__(self, app: ASGIApp, merge: Merge) -> None:
        self.app = app
        self.merge = merge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        self.merge.requests += 1  # one event loop: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.merge.requests -= 1
            self.merge.last_request = self.merge.clock()


def await_release(merge: Merge, linger_s: float, poll_s: float = 5.0) -> bool:
    """Once the merge has ended: wait until the client says it is done (True), or has been silent for
    ``linger_s`` (False)."""
    while not merge.released.wait(poll_s):
        if merge.idle_s() >= linger_s:
            return False
    return True


class DoneBody(BaseModel):
    keep: bool = False


def create_app(merge: Merge, digest: str) -> FastAPI:
    """The merge pod's API over ``merge``; requests must carry the bearer token whose sha256 is ``digest``."""
    if not _SHA256.fullmatch(digest):
        raise ValueError("the merge pod needs its token's sha256")
    off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    app = FastAPI(title="lorapod merge", docs_url=None, redoc_url=None, openapi_url=None, telemetry=off)
    app.add_middleware(_Activity, merge=merge)  # inside the token check: only the client keeps the pod up
    app.add_middleware(_BearerAuth, token_sha256=digest)

    def health() -> dict[str, Any]:
        return {"ok": True, "merge": True, "state": merge.state}

    def status() -> dict[str, Any]:
        return merge.describe()

    def file(name: str) -> FileResponse:
        path = merge.file(name)
        if path is None:
            raise HTTPException(404, f"{name}: no such merged file")
        # FileResponse answers Range requests (206 with Content-Range): a cut download goes on where it stopped.
        return FileResponse(path, media_type="application/octet-stream")

    def done(body: DoneBody) -> dict[str, Any]:
        merge.release(keep=body.keep)
        return {"ok": True}

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/merge", status, methods=["GET"])
    app.add_api_route("/merge/files/{name:path}", file, methods=["GET"])
    app.add_api_route("/merge/done", done, methods=["POST"])
    return app


def pod_main() -> int:
    """In a merge pod: serve the API on the pod API's port, merge, linger for the client, delete the pod."""
    import uvicorn

    from engine.playground import bind
    from engine.pod import PodConfig, PodJob
    from engine.pod_secrets import SecretsError
    from engine.serve import _ignore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    digest = bearer_digest()
    if digest is None:
        print("error: LORAPOD_POD_TOKEN_SHA256 is not set; the merge pod refuses to serve without a token",
              file=sys.stderr)  # fmt: skip
        return 2
    config = PodConfig.from_env()
    pod = PodJob(config)
    (pod.workdir.root / "control").mkdir(parents=True, exist_ok=True)
    pod.workdir.pod_pid.write_text(str(os.getpid()))  # what a launcher checks over SSH: the pod's process lives
    try:
        # A stock-image pod is handed over like any service pod: its delivery is awaited (and removed from tmpfs)
        # so the hand-over succeeds. It carries nothing: the merge needs no secret, and none enters its env.
        pod.receive_secrets()
    except SecretsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    models = Path(os.environ.get("LORAPOD_MODELS_DIR") or config.workspace / "lorapod" / "models")
    merge = Merge(pod.workdir, models, config.python)
    if config.max_seconds:
        watchdog = threading.Timer(config.max_seconds, _give_up, args=(pod, merge, config.max_seconds))
        watchdog.daemon = True
        watchdog.start()
    server = uvicorn.Server(
        uvicorn.Config(create_app(merge, digest), log_level="warning", server_header=False, timeout_graceful_shutdown=2)
    )

    def lifecycle() -> None:
        merge.run()
        if not await_release(merge, config.linger_s):
            log.warning("no word from the client for %.0f s: the merged files stay on the volume", config.linger_s)
        pod.delete_pod(f"the merge has {merge.state}")
        server.should_exit = True

    threading.Thread(target=lifecycle, name="merge", daemon=True).start()
    import signal

    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[bind("0.0.0.0", config.api_port)])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pod.deleted:
        time.sleep(60)  # RunPod stops the container; exiting first would only restart it
    return 0


def _give_up(pod: Any, merge: Merge, limit: float) -> None:
    log.error("the merge pod's watchdog: past its maximum of %.2f h; deleting the pod", limit / 3600)
    if merge.process is not None and merge.process.poll() is None:
        merge.process.kill()
    pod.delete_pod("the merge pod's watchdog")
    os._exit(0)

"""The playground's client side: put one prompt to a job's base model and to its adapter, replies streamed.

The model runs elsewhere, never in this process (the dashboard imports no torch): a local job's in a
``python -m engine playground`` subprocess (``LocalPlayground``), a RunPod job's on a pod started for it
(``remote.runpod.playground``). Both speak the same small HTTP API (engine.playground), read here by
``PlaygroundClient``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

import httpx

from remote.provider import ProviderError
from store.db import Ledger
from store.models import TrainingJob
from store.settings import Settings

if TYPE_CHECKING:
    from remote.runpod.playground import Quote

Side = Literal["base", "adapter"]
SIDES: tuple[Side, Side] = ("base", "adapter")
READY_PREFIX = "lorapod-playground ready "  # engine.playground.READY_PREFIX (remote imports no engine stage)
LOCAL_START_TIMEOUT_S = 300.0
DEFAULT_MAX_NEW_TOKENS = 128


class PlaygroundError(ProviderError):
    """The playground cannot start or answer; the message says why."""


@dataclass
class Reply:
    """One side's reply: its text, and how it came (tokens, time to the first piece, seconds in all)."""

    side: Side
    text: str = ""
    tokens: int = 0
    first_token_s: float | None = None
    seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text.strip(), "tokens": self.tokens, "first_token_s": self.first_token_s,
            "seconds": self.seconds,
        }  # fmt: skip


class PlaygroundClient:
    """The playground API at ``url`` (a local port, or a pod behind RunPod's proxy)."""

    def __init__(self, url: str, token: str, *, timeout: float = 95.0) -> None:
        self.url = url.rstrip("/")
        # RunPod's proxy ends a request after 100 s: a reply is bounded by max_new_tokens well inside that.
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(timeout, connect=10)
        )

    def health(self) -> dict[str, Any] | None:
        """What /health says, or None while nothing answers as a playground there."""
        try:
            response = self._http.get("/health", timeout=5)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            found = response.json()
        except ValueError:
            return None
        return found if isinstance(found, dict) and found.get("playground") else None

    def stream(
        self, messages: list[dict[str, str]], side: Side, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ) -> Iterator[str | Reply]:
        """The reply's text pieces as they come, then the whole Reply."""
        reply = Reply(side)
        body = {"messages": messages, "side": side, "max_new_tokens": max_new_tokens}
        try:
            with self._http.stream("POST", "/chat", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise PlaygroundError(f"the playground answered HTTP {response.status_code}: {response.text[:200]}")
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    if item.get("done"):
                        if item.get("error"):
                            raise PlaygroundError(f"the {side} model failed to reply: {item['error']}")
                        reply.tokens = int(item.get("tokens") or 0)
                        reply.first_token_s = item.get("first_token_s")
                        reply.seconds = item.get("seconds")
                    elif "text" in item:
                        reply.text += str(item["text"])
                        yield str(item["text"])
        except httpx.HTTPError as exc:
            raise PlaygroundError(f"the playground at {self.url} did not answer ({type(exc).__name__})") from None
        except ValueError:
            raise PlaygroundError(f"the playground at {self.url} sent something that is not its reply") from None
        yield reply

    def reply(
        self, messages: list[dict[str, str]], side: Side, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_piece: Callable[[str], None] | None = None,
    ) -> Reply:  # fmt: skip
        """The whole reply, each piece passed to ``on_piece`` as it comes."""
        for item in self.stream(messages, side, max_new_tokens=max_new_tokens):
            if isinstance(item, Reply):
                return item
            if on_piece is not None:
                on_piece(item)
        raise PlaygroundError("the playground's reply ended before it was complete")

    def close(self) -> None:
        self._http.close()


class Session(Protocol):
    """An open playground: where it answers, and how to mark it used and to close it."""

    client: PlaygroundClient

    def touch(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class LocalPlayground:
    """A ``python -m engine playground`` subprocess serving a local job's workdir on 127.0.0.1."""

    client: PlaygroundClient
    process: subprocess.Popen[str]
    base_model: str
    log: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls, workdir: Path, models_dir: Path, *, python: str | None = None, timeout: float = LOCAL_START_TIMEOUT_S
    ) -> LocalPlayground:
        """Start the server and wait for its ready line; PlaygroundError with its last words when it fails."""
        token = secrets.token_urlsafe(32)
        command = [
            python or sys.executable, "-m", "engine", "playground", "--workdir", str(workdir),
            "--models-dir", str(models_dir), "--port", "0", "--host", "127.0.0.1",
        ]  # fmt: skip
        env = {**os.environ, "LORAPOD_POD_TOKEN": token, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            cwd=str(Path(__file__).resolve().parent.parent),
        )  # fmt: skip
        assert process.stdout is not None
        lines: list[str] = []
        ready = _read_ready(process.stdout, lines, timeout)
        if ready is None:
            _stop(process)
            said = "\n".join(lines[-15:]).strip()
            raise PlaygroundError(
                f"the playground for {workdir} did not start" + (f":\n{said}" if said else f" within {timeout:.0f} s")
            )
        threading.Thread(target=_drain, args=(process.stdout, lines), name="playground-log", daemon=True).start()
        client = PlaygroundClient(f"http://127.0.0.1:{int(ready['port'])}", token, timeout=600)
        return cls(client, process, str(ready.get("base_model", "")), lines)

    def touch(self) -> None:
        """Nothing to note: a local playground costs nothing idle and ends with its user."""

    def close(self) -> None:
        self.client.close()
        _stop(self.process)


def _read_ready(stream: IO[str], lines: list[str], timeout: float) -> dict[str, Any] | None:
    """The ready line's JSON, read from ``stream`` on a thread so the wait has a deadline."""
    found: dict[str, Any] = {}
    done = threading.Event()

    def read() -> None:
        for line in stream:
            if line.startswith(READY_PREFIX):
                found.update(json.loads(line.removeprefix(READY_PREFIX)))
                break
            lines.append(line.rstrip("\n"))
        done.set()

    threading.Thread(target=read, name="playground-start", daemon=True).start()
    done.wait(timeout)
    return found or None


def _drain(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))
        del lines[:-200]


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ask_both(
    session: Session,
    prompt: str,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    on_piece: Callable[[Side, str], None] | None = None,
    history: list[dict[str, str]] | None = None,
) -> dict[Side, Reply]:
    """``prompt`` put to the base model, then to the adapter; each piece goes to ``on_piece`` as it comes."""
    messages = [*(history or []), {"role": "user", "content": prompt}]
    replies: dict[Side, Reply] = {}
    for side in SIDES:
        session.touch()  # before each reply: a pod is never taken for idle while it answers
        callback = (lambda piece, s=side: on_piece(s, piece)) if on_piece else None
        replies[side] = session.client.reply(messages, side, max_new_tokens=max_new_tokens, on_piece=callback)
    session.touch()
    return replies


def wait_until_healthy(client: PlaygroundClient, timeout: float, *, alive: Callable[[], bool] = lambda: True) -> bool:
    """Whether the playground answers /health within ``timeout`` seconds (False at once once ``alive`` is not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.health() is not None:
            return True
        if not alive():
            return False
        time.sleep(1.0)
    return False


def quote_session(settings: Settings, ledger: Ledger, job: TrainingJob) -> Quote | None:
    """What a playground for ``job`` would rent (a RunPod job's pod and its rate); None for a local job, whose
    playground costs nothing. Refuses a job with no adapter to try."""
    from store.jobs import short_id
    from store.status import JobStatus

    if job.status != JobStatus.COMPLETED:
        raise PlaygroundError(f"job {short_id(job.id)} is {job.status}: only a completed job has an adapter to try")
    if job.provider == "runpod":
        from remote.runpod.playground import RunPodPlaygrounds

        return RunPodPlaygrounds(settings, ledger).quote(job)
    if not (local_workdir(settings, job) / "adapter" / "adapter_model.safetensors").is_file():
        raise PlaygroundError(f"job {short_id(job.id)} left no adapter in {local_workdir(settings, job) / 'adapter'}")
    return None


def local_workdir(settings: Settings, job: TrainingJob) -> Path:
    return Path(job.workdir) if job.workdir else settings.paths.jobs_dir / str(job.id)


def open_session(settings: Settings, ledger: Ledger, job: TrainingJob, quote: Quote | None) -> Session:
    """The playground for ``job``: a local subprocess, or the pod ``quote`` describes (whose rate the user has
    agreed to), with the background supervisor running to delete it once idle."""
    if quote is None:
        return LocalPlayground.start(local_workdir(settings, job), settings.paths.models_dir)
    from remote.daemon import ensure_running
    from remote.runpod.playground import RunPodPlaygrounds

    session = RunPodPlaygrounds(settings, ledger).open(quote)
    ensure_running(settings.paths)  # it deletes the pod once idle, with no terminal open
    return session

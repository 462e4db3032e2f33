"""How lorapod talks to a running pod: the transport interface (SSH and HTTP implement it), event feeds that
read on a thread of their own and reconnect with backoff, and the failover between the two transports.

Events carry a ``seq``; a feed remembers the last seq it handed over and a new feed (after a reconnect or a
switch of transport) starts after it, so no event is lost and none arrives twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar

from engine.artifacts import ChecksumMismatch, check_sha256
from engine.checksums import sha256_file
from engine.partials import UnsafePartial, open_resumable
from remote.provider import ArtifactError
from remote.runpod.errors import HostKeyChanged, PodJobFailed, TransportError

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0
FAILING_AFTER_S = 20.0  # a feed that has not connected for this long lets the failover try the other transport
REST_AFTER_FAILURE_S = 30.0  # a transport that failed a call is tried after the others for this long


@dataclass(frozen=True)
class PodEndpoint:
    """Where one pod can be reached, and the job's workdir in it."""

    pod_id: str
    workdir: str
    token: str
    proxy_url: str | None
    ssh_host: str | None
    ssh_port: int | None

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"PodEndpoint(pod_id={self.pod_id!r}, ssh={self.ssh_host}:{self.ssh_port}, proxy={self.proxy_url!r})"


class EventFeed(ABC):
    """A run's events after a seq, read on a background thread; ``poll`` hands over what has arrived."""

    name: ClassVar[str] = "feed"

    def __init__(self, after_seq: int) -> None:
        self.read_seq = after_seq  # the newest seq the reader has queued
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._last_ok = time.monotonic()
        self.connected = False
        self.reconnects = 0
        self._thread = threading.Thread(target=self._run, name=f"lorapod-{self.name}-events", daemon=True)
        self._thread.start()

    @abstractmethod
    def follow(self, after_seq: int) -> Iterator[dict[str, Any]]:
        """Events after ``after_seq`` as they are written; returns or raises TransportError when cut off."""

    def interrupt(self) -> None:  # noqa: B027 — optional hook
        """Unblock a ``follow`` waiting for data (called on close)."""

    def mark_alive(self) -> None:
        """Called by ``follow`` whenever the pod answered, events or not."""
        self.connected = True
        self._last_ok = time.monotonic()

    @property
    def failing(self) -> bool:
        return not self.connected and time.monotonic() - self._last_ok > FAILING_AFTER_S

    def _run(self) -> None:
        delay = BACKOFF_START_S
        while not self._stop.is_set():
            try:
                for event in self.follow(self.read_seq):
                    self.mark_alive()
                    delay = BACKOFF_START_S
                    seq = int(event.get("seq", 0))
                    if seq > self.read_seq:
                        self.read_seq = seq
                        self._queue.put(event)
                    if self._stop.is_set():
                        return
                if self.connected:
                    delay = BACKOFF_START_S
            except HostKeyChanged as exc:
                self._fatal = exc
                return
            except TransportError as exc:
                if self._stop.is_set():
                    return
                log.info("%s events: %s; reconnecting in %.1f s", self.name, exc, delay)
            except Exception as exc:  # a reader must never die silently
                log.warning("%s events: unexpected %s: %s", self.name, type(exc).__name__, exc)
            self.connected = False
            self.reconnects += 1
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX_S)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        if self._fatal is not None:
            raise self._fatal
        found: list[dict[str, Any]] = []
        try:
            found.append(self._queue.get(timeout=max(timeout, 0.0)))
        except queue.Empty:
            return found
        while True:
            try:
                found.append(self._queue.get_nowait())
            except queue.Empty:
                return found

    def close(self) -> None:
        self._stop.set()
        self.interrupt()


class PodTransport(ABC):
    """One way of reaching a pod. Every method raises TransportError when the pod cannot be reached."""

    name: ClassVar[str]

    def __init__(self, endpoint: PodEndpoint) -> None:
        self.endpoint = endpoint

    @property
    @abstractmethod
    def available(self) -> bool:
        """Whether the pod offers this way at all (SSH needs a public IP and port 22 mapped)."""

    @abstractmethod
    def check(self) -> None:
        """Reach the pod once (TransportError when it cannot be reached)."""

    @abstractmethod
    def events(self, after_seq: int) -> EventFeed: ...

    @abstractmethod
    def read_log(self, offset: int) -> tuple[str, int]:
        """The engine's log from byte ``offset``, and the offset to continue from."""

    @abstractmethod
    def tail_pod_log(self, max_bytes: int = 4000) -> str:
        """The end of what the pod itself logged (for a pod that fails to start)."""

    @abstractmethod
    def cancel(self, reason: str) -> None: ...

    @abstractmethod
    def engine_exit(self) -> dict[str, Any] | None:
        """How the engine ended, once the pod's entrypoint has noted it."""

    @abstractmethod
    def upload_input(self, source: Path, name: str, sha256: str) -> None:
        """Put a file into the workdir's inputs/ (whole, or not at all)."""

    @abstractmethod
    def deliver_secrets(self, folder: str, job_id: str, bootstrap: str, data: bytes) -> None:
        """Hand the pod this attempt's secrets (``engine.pod_secrets``): a 0600 file in ``folder``, on tmpfs."""

    def upload_boot(self, files: dict[str, Path]) -> None:
        """Hand a stock-image pod its bootstrap files (boot/ in the workdir), then mark them ready."""
        raise TransportError(f"{self.name}: a stock-image pod is started over SSH only")

    @abstractmethod
    def list_artifacts(self) -> list[dict[str, Any]]:
        """The packages: name, size and sha256 (None while it is being computed)."""

    @abstractmethod
    def download_artifact(self, name: str, dest_dir: Path, sha256: str | None) -> Path: ...

    def close(self) -> None:  # noqa: B027 — optional hook
        """Drop connections."""


class Link:
    """A pod's transports in the order of preference; each call goes to the first that answers."""

    def __init__(self, transports: list[PodTransport]) -> None:
        self.transports = [t for t in transports if t.available]
        if not self.transports:
            raise TransportError("the pod offers neither SSH (no public IP) nor its HTTP port")
        self._resting: dict[str, float] = {}

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.transports]

    def call(self, action: Callable[[PodTransport], T]) -> T:
        """``action`` on the first transport that answers; one that failed rests a while (unless all did)."""
        now = time.monotonic()
        ready = [t for t in self.transports if self._resting.get(t.name, 0.0) <= now]
        problems = []
        for transport in ready or self.transports:
            try:
                found = action(transport)
            except (HostKeyChanged, PodJobFailed):
                raise  # answers, not a way that failed: the other way would say the same or hide it
            except TransportError as exc:
                problems.append(f"{transport.name}: {exc}")
                self._resting[transport.name] = time.monotonic() + REST_AFTER_FAILURE_S
                continue
            self._resting.pop(transport.name, None)
            return found
        raise TransportError("; ".join(problems))

    def events(self, after_seq: int) -> FailoverFeed:
        return FailoverFeed(self.transports, after_seq)

    def close(self) -> None:
        for transport in self.transports:
            transport.close()


class FailoverFeed:
    """Events from the preferred transport, switching to the other while it cannot connect."""

    def __init__(self, transports: list[PodTransport], after_seq: int) -> None:
        self.transports = transports
        self.after_seq = after_seq  # the newest seq handed to the caller
        self.index = 0
        self.switches = 0
        self.feed = transports[0].events(after_seq)

    @property
    def transport(self) -> str:
        return self.transports[self.index].name

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        fresh = [e for e in self.feed.poll(timeout) if int(e.get("seq", 0)) > self.after_seq]
        if fresh:
            self.after_seq = int(fresh[-1]["seq"])
        elif self.feed.failing and len(self.transports) > 1:
            self.feed.close()
            self.index = (self.index + 1) % len(self.transports)
            self.switches += 1
            log.warning("events: switching to %s after seq %d", self.transport, self.after_seq)
            self.feed = self.transports[self.index].events(self.after_seq)
        return fresh

    def close(self) -> None:
        self.feed.close()


def open_download(partial: Path) -> BinaryIO:
    """A resumable download's partial file, open for appending; ArtifactError when a link or another kind of
    file has its name."""
    try:
        return open_resumable(partial)
    except UnsafePartial as exc:
        raise ArtifactError(str(exc)) from None
    except OSError as exc:
        raise ArtifactError(f"{partial}: cannot be written ({exc.strerror or type(exc).__name__})") from None


def finish_download(partial: Path, target: Path, sha256: str | None) -> Path:
    """Check a downloaded file's sha256 and give it its name; a mismatch deletes it."""
    try:
        check_sha256(target.name, sha256_file(partial), sha256)
    except ChecksumMismatch as exc:
        partial.unlink(missing_ok=True)
        raise ArtifactError(str(exc)) from None
    partial.replace(target)
    return target

"""The background supervisor: one process per data dir that follows every live job in the ledger, whoever
started it, so limits, recovery and notices hold with nothing of the user's open.

``lorapod run``, ``resume``, ``retry`` and the dashboard start it when it is not running
(``ensure_running``); ``lorapod supervisor start|stop|status|logs`` manage it by hand, and ``lorapod
supervisor run`` keeps it in the foreground for a service manager (docs/supervisor.md). A lock file allows
one per data dir. Each round it ingests every live job's events (holding the job's lease, so a terminal
following the same job only watches), closes attempts at their engine's own end time, keeps the monthly
budget and its alerts, resumes interrupted jobs where ``auto_resume`` allows, releases pods, delivers
notices, and deletes playground pods ``playground_idle_minutes`` after their last prompt
(remote.runpod.playground). It exits ``supervisor_idle_exit_minutes`` after the last live job ended and the
last playground pod is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

from remote import notices
from remote.follower import Follower
from store.db import Ledger
from store.jobs import get_job, list_jobs, short_id
from store.settings import Paths, Settings, load_settings
from store.status import RUNNING, TERMINAL, JobStatus

log = logging.getLogger("lorapod.supervisor")
ROUND_SECONDS = 0.5
PLAYGROUND_EVERY_S = 5.0  # playground pods are looked at this often (a REST call each)


@dataclass(frozen=True)
class DaemonFiles:
    """The supervisor's files in a data dir: the lock (holding its pid), its status and its log."""

    lock: Path
    status: Path
    log: Path

    @classmethod
    def of(cls, paths: Paths) -> DaemonFiles:
        return cls(
            paths.data_dir / "supervisor.lock", paths.data_dir / "supervisor.json", paths.data_dir / "supervisor.log"
        )


@dataclass(frozen=True)
class DaemonStatus:
    running: bool
    pid: int | None
    started_at: str | None
    following: list[str]
    updated_at: str | None
    log: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Lock:
    """An exclusive, non-blocking lock on the lock file, held for the life of the process that took it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def acquire(self, wait: float = 1.0) -> bool:
        """Take the lock; False when another process keeps it for ``wait`` seconds (someone asking who holds
        it takes it for an instant, so one refusal is not an answer)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return False
                time.sleep(0.02)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _holder(path: Path) -> int | None:
    """The pid of the process that holds the lock, or None when nobody does."""
    if not path.exists():
        return None
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def status(paths: Paths) -> DaemonStatus:
    files = DaemonFiles.of(paths)
    pid = _holder(files.lock)
    recorded: dict[str, Any] = {}
    if pid is not None:
        with contextlib.suppress(OSError, ValueError):
            recorded = json.loads(files.status.read_text(encoding="utf-8"))
    return DaemonStatus(
        running=pid is not None,
        pid=pid,
        started_at=recorded.get("started_at"),
        following=list(recorded.get("following", [])),
        updated_at=recorded.get("updated_at"),
        log=str(files.log),
    )


def ensure_running(paths: Paths, *, python: str | None = None) -> int | None:
    """Start the background supervisor unless one already runs for this data dir; its pid (None: it did not
    come up, and the log says why)."""
    files = DaemonFiles.of(paths)
    pid = _holder(files.lock)
    if pid is not None:
        return pid
    files.log.parent.mkdir(parents=True, exist_ok=True)
    command = [python or sys.executable, "-m", "remote.daemon", "--quiet"]
    with files.log.open("ab") as output:  # a crash before logging is set up still lands in the log
        subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=str(Path(__file__).resolve().parent.parent),
        )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = _holder(files.lock)
        if pid is not None:
            return pid
        time.sleep(0.05)
    return None


def stop(paths: Paths, timeout: float = 30) -> bool:
    """Ask the running supervisor to stop (its jobs go on); True once it has."""
    pid = _holder(DaemonFiles.of(paths).lock)
    if pid is None or pid <= 0:
        return pid is None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _holder(DaemonFiles.of(paths).lock) is None:
            return True
        time.sleep(0.1)
    return False


class Daemon:
    """The loop: follow every live job, one round each, until told to stop or idle long enough."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        from remote.supervisor import Supervisor

        self.settings = settings
        self.files = DaemonFiles.of(settings.paths)
        self.ledger = Ledger(settings.paths.ledger)
        self.supervisor = Supervisor(self.ledger, settings)
        self.followers: dict[uuid.UUID, Follower] = {}
        self.clock = clock
        self.stopping = threading.Event()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._unfollowable: set[uuid.UUID] = set()
        self.playgrounds = 0  # playground pods up, as last counted
        self._playgrounds_at: float | None = None

    def live_jobs(self) -> list[uuid.UUID]:
        """Jobs with a run to follow: launched and not ended (queued and interrupted jobs have none)."""
        from store.jobs import JobQuery

        rows = list_jobs(self.ledger, JobQuery(group="active", limit=10_000)).jobs
        return [row.id for row in rows if row.status in RUNNING]

    def round(self) -> None:
        for job_id in self.live_jobs():
            if job_id in self.followers or job_id in self._unfollowable:
                continue
            job = get_job(self.ledger, job_id)
            if job.provider not in self.supervisor.providers:
                log.warning("job %s runs on %s, which is not configured here; not followed",
                            short_id(job.id), job.provider)  # fmt: skip
                self._unfollowable.add(job_id)
                continue
            self.followers[job_id] = Follower(self.supervisor, job, None, 0.0)
            log.info("following job %s (%s, %s)", short_id(job.id), job.provider, job.status)
        for job_id, follower in list(self.followers.items()):
            try:
                job = follower.round()
            except Exception:  # one job's trouble must not stop the others being followed
                log.exception("job %s: following failed this round", short_id(job_id))
                continue
            ended = job.status in TERMINAL or job.status in (JobStatus.INTERRUPTED, JobStatus.QUEUED)
            if ended and follower.drained:
                follower.close()
                del self.followers[job_id]
                log.info("job %s is %s; no longer followed", short_id(job_id), job.status)
        notices.retry_due(self.ledger, self.settings)  # a notice that failed is tried again, job or no job
        self._reap_playgrounds()
        self._write_status()

    def _reap_playgrounds(self) -> None:
        """Delete idle playground pods; count those still up (the supervisor stays while any is)."""
        now = self.clock()
        if self._playgrounds_at is not None and now - self._playgrounds_at < PLAYGROUND_EVERY_S:
            return
        self._playgrounds_at = now
        from remote.runpod.playground import RunPodPlaygrounds, open_playgrounds

        if not open_playgrounds(self.ledger):
            self.playgrounds = 0
            return
        try:
            self.playgrounds = RunPodPlaygrounds(self.settings, self.ledger).reap_idle()
        except Exception:  # RunPod unreachable this round: the pods are looked at again in a few seconds
            log.exception("playground pods: not looked at this round")

    def _write_status(self) -> None:
        data = {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "following": [str(job_id) for job_id in self.followers],
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        tmp = self.files.status.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self.files.status)

    def run(self) -> int:
        idle_limit = self.settings.supervisor_idle_exit_minutes * 60
        idle_since: float | None = None
        log.info("supervisor %d started for %s", os.getpid(), self.settings.paths.data_dir)
        try:
            while not self.stopping.is_set():
                started = self.clock()
                self.round()
                if self.followers or self.playgrounds:
                    idle_since = None
                elif idle_since is None:
                    idle_since = self.clock()
                elif self.clock() - idle_since >= idle_limit:
                    log.info("no live job for %.0f s: exiting", self.clock() - idle_since)
                    break
                self.stopping.wait(max(ROUND_SECONDS - (self.clock() - started), 0.05))
        finally:
            for follower in self.followers.values():
                follower.close()  # the leases go back: a terminal following a job takes over at once
            self.ledger.close()
            log.info("supervisor %d stopped", os.getpid())
        return 0

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("%s received: stopping after this round (jobs keep running)", signal.Signals(signum).name)
        self.stopping.set()


def _setup_logging(log_file: Path, *, quiet: bool) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(log_file, encoding="utf-8")]
    if not quiet:  # in the foreground (a service manager's journal, a terminal) too
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.handlers[:] = handlers
    for handler in handlers:
        handler.setFormatter(formatter)
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "paramiko", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Run the supervisor in this process until it is stopped or idle; 0, or 3 when one already runs."""
    parser = argparse.ArgumentParser(prog="python -m remote.daemon", description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="log to the data dir's supervisor.log only")
    args = parser.parse_args(argv)
    settings = load_settings()
    files = DaemonFiles.of(settings.paths)
    _setup_logging(files.log, quiet=args.quiet)
    lock = Lock(files.lock)
    if not lock.acquire():
        log.info("a supervisor already runs for %s (pid %s)", settings.paths.data_dir, _holder(files.lock))
        return 3
    try:
        daemon = Daemon(settings)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, daemon.on_signal)
        return daemon.run()
    finally:
        files.status.unlink(missing_ok=True)
        lock.release()


if __name__ == "__main__":
    sys.exit(main())

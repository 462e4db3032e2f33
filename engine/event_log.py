"""The events file as the pod API reads it: the job's status folded event by event, and where each seq ends.

Remembering the byte offset after every seq (16 bytes an event) lets each poll of every connection read only
the lines after the seq it asks for, however long the file has grown.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from engine.events import TERMINAL_STAGES, read_events


@dataclass
class JobStatus:
    """What the events say so far: folded one event at a time."""

    job_id: str | None = None
    stage: str | None = None
    message: str | None = None
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None
    loss: float | None = None
    last_seq: int = 0
    last_event_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.stage in TERMINAL_STAGES

    def fold(self, event: dict[str, Any]) -> None:
        self.last_seq = max(self.last_seq, int(event.get("seq", 0)))
        self.job_id = event.get("job_id") or self.job_id
        self.last_event_at = event.get("ts", self.last_event_at)
        kind = event.get("type")
        if kind == "stage":
            self.stage, self.message = event.get("stage"), event.get("message")
        elif kind in ("metrics", "status", "checkpoint", "heartbeat", "dataset"):
            for key in ("step", "total_steps", "epoch"):
                if event.get(key) is not None:
                    setattr(self, key, event[key])
            if kind == "metrics" and event.get("loss") is not None:
                self.loss = event["loss"]


class EventLog:
    """The events file as the API reads it: the status folded so far, and where each seq ends in the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self._inode = inode
        self._offset = 0
        self._seqs = array("q")
        self._ends = array("q")
        self.status = JobStatus()

    def changed(self) -> bool:
        """Whether the file grew (or was replaced) since the last refresh: one stat, cheap enough to poll."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self._inode is not None
        return st.st_ino != self._inode or st.st_size != self._offset

    def refresh(self) -> JobStatus:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._reset(None)
                return self.status
            if st.st_ino != self._inode or st.st_size < self._offset:
                self._reset(st.st_ino)
            for end, event in read_events(self.path, offset=self._offset):
                self.status.fold(event)
                seq = int(event["seq"])
                if not self._seqs or seq > self._seqs[-1]:
                    self._seqs.append(seq)
                    self._ends.append(end)
                self._offset = end
            return self.status

    def read_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` complete events with a seq above ``after``, oldest first."""
        with self._lock:
            index = bisect_right(self._seqs, after)
            if index >= len(self._seqs):
                return []
            start = self._ends[index - 1] if index else 0
        found = []
        for _, event in read_events(self.path, after_seq=after, offset=start):
            found.append(event)
            if len(found) >= limit:
                break
        return found

    async def after(self, after: int, limit: int) -> list[dict[str, Any]]:
        if self.changed():
            await run_in_threadpool(self.refresh)
        if after >= self.status.last_seq:
            return []
        return await run_in_threadpool(self.read_after, after, limit)

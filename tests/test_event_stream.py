"""Reading a workdir's events while the engine writes them: nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from remote.local import FileEventStream


def test_lines_finished_between_two_looks_are_never_skipped(tmp_path: Path) -> None:
    """A line completed between the stream's read and its look at the file's size was stepped over unread:
    the ledger lost events (seq 2 of a job started from the dashboard, say)."""
    path = tmp_path / "events.jsonl"
    total = 3000
    done = threading.Event()

    def write() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for seq in range(1, total + 1):
                line = json.dumps({"seq": seq, "type": "log", "message": "x" * (seq % 50)}).encode() + b"\n"
                cut = len(line) // 2
                os.write(fd, line[:cut])  # half a line, as a reader can find it
                if seq % 7 == 0:
                    time.sleep(0)
                os.write(fd, line[cut:])
        finally:
            os.close(fd)
            done.set()

    writer = threading.Thread(target=write)
    stream = FileEventStream(path, after_seq=0)
    seen: list[int] = []
    writer.start()
    deadline = time.monotonic() + 30
    while (not done.is_set() or len(seen) < total) and time.monotonic() < deadline:
        seen.extend(int(event["seq"]) for event in stream.poll(0.0))
    writer.join()
    assert seen == list(range(1, total + 1))

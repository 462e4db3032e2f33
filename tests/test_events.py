"""Events and metrics: idempotent ingest, and two processes writing at once without "database is locked"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import presets
from store.db import Ledger
from store.events import EventRecord, count_events, list_events, record_events
from store.jobs import create_job, get_job
from store.metrics import metrics_history, record_metrics
from tests.conftest import ROOT


def _job(ledger: Ledger):  # type: ignore[no-untyped-def]
    return create_job(ledger, presets.get("smoke").to_spec("d.json"))


def _events(first: int, last: int, job_id: str = "x") -> list[dict[str, object]]:
    return [
        {"seq": seq, "ts": "2026-11-22T10:00:00+00:00", "job_id": job_id, "type": "metrics", "step": seq, "loss": 1.5}
        for seq in range(first, last + 1)
    ]


def test_ingesting_the_same_events_again_adds_none(ledger: Ledger) -> None:
    job = _job(ledger)
    assert record_events(ledger, job.id, _events(1, 100)) == 100
    assert record_events(ledger, job.id, _events(1, 100)) == 0
    assert record_events(ledger, job.id, _events(50, 150)) == 50
    assert count_events(ledger, job.id) == 150
    assert get_job(ledger, job.id).last_event_seq == 150


def test_events_keep_their_payload_and_time(ledger: Ledger) -> None:
    job = _job(ledger)
    record_events(ledger, job.id, [{"seq": 1, "ts": "2026-11-22T10:00:00Z", "type": "stage", "stage": "training"}])
    (event,) = list_events(ledger, job.id)
    assert (event.seq, event.type, event.payload) == (1, "stage", {"stage": "training"})
    assert event.ts.isoformat() == "2026-11-22T10:00:00+00:00"
    record_events(ledger, job.id, [EventRecord(2, "log", event.ts, {"message": "x"})])
    assert [e.seq for e in list_events(ledger, job.id, after_seq=1)] == [2]
    assert [e.type for e in list_events(ledger, job.id, types=["stage"])] == ["stage"]


WRITER = textwrap.dedent(
    """
    import sys, time, uuid
    from pathlib import Path
    from store.db import Ledger
    from store.events import record_events
    path, job_id, start = sys.argv[1], uuid.UUID(sys.argv[2]), Path(sys.argv[3])
    ledger = Ledger(path)
    while not start.exists():
        time.sleep(0.001)
    for first in range(1, 5001, 25):
        seqs = range(first, first + 25)
        record_events(ledger, job_id, [{"seq": s, "ts": "2026-11-22T10:00Z", "type": "metrics"} for s in seqs])
    """
)


def test_two_processes_write_5000_events_each_at_once(ledger: Ledger, tmp_path: Path) -> None:
    jobs = [_job(ledger), _job(ledger)]
    start = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ledger.path), str(job.id), str(start)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job in jobs
    ]
    time.sleep(0.5)  # both processes are waiting with the ledger open
    start.touch()
    errors = [w.communicate(timeout=300)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert not any("locked" in e for e in errors)
    assert count_events(ledger) == 10_000
    assert [get_job(ledger, j.id).last_event_seq for j in jobs] == [5000, 5000]
    for job in jobs:
        assert record_events(ledger, job.id, _events(1, 5000)) == 0
    assert count_events(ledger) == 10_000


def test_metrics_for_a_step_fill_in_without_erasing(ledger: Ledger) -> None:
    job = _job(ledger)
    record_metrics(ledger, job.id, [{"step": 10, "loss": 2.0, "learning_rate": 1e-4}, {"step": 20, "loss": 1.5}])
    record_metrics(ledger, job.id, [{"step": 10, "eval_loss": 2.2}])
    rows = metrics_history(ledger, job.id)
    assert [(m.step, m.loss, m.eval_loss, m.learning_rate) for m in rows] == [
        (10, 2.0, 2.2, 1e-4),
        (20, 1.5, None, None),
    ]
    assert [m.step for m in metrics_history(ledger, job.id, last=1)] == [20]

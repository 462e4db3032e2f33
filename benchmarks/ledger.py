"""Ledger benchmarks: event ingest rate, and listing 10,000 jobs with a filter and a sort."""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import presets
from store.db import Ledger
from store.events import record_events
from store.jobs import JobQuery, create_job, list_jobs, transition, update_job
from store.status import JobStatus

EVENTS = 50_000
BATCH = 500
JOBS = 10_000


def _timed(fn: Any, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def event_ingest(workdir: Path) -> dict[str, Any]:
    ledger = Ledger(workdir / "ingest.sqlite")
    job = create_job(ledger, presets.get("smoke").to_spec("d.json"))
    events = [
        {"seq": seq, "ts": "2026-11-22T10:00:00+00:00", "type": "metrics", "step": seq, "loss": 1.0, "lr": 2e-4}
        for seq in range(1, EVENTS + 1)
    ]
    start = time.perf_counter()
    for first in range(0, EVENTS, BATCH):
        record_events(ledger, job.id, events[first : first + BATCH])
    elapsed = time.perf_counter() - start
    start = time.perf_counter()
    record_events(ledger, job.id, events[:BATCH])  # a repeat: nothing new
    repeat = time.perf_counter() - start
    return {
        "name": "event ingest",
        "value": round(EVENTS / elapsed),
        "unit": "events/s",
        "target": ">= 20000",
        "conditions": f"{EVENTS} metric events in batches of {BATCH}, one transaction each; WAL, synchronous=NORMAL",
        "repeat_batch_ms": round(repeat * 1000, 2),
    }


def _populate(ledger: Ledger) -> float:
    rng = random.Random(7)
    spec = presets.get("balanced").to_spec("d.json")
    endings = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TRAINING]
    start = time.perf_counter()
    for i in range(JOBS):
        job = create_job(ledger, spec, name=f"job {i}")
        ending = rng.choice(endings)
        transition(ledger, job.id, JobStatus.TRAINING)
        if ending is not JobStatus.TRAINING:
            transition(ledger, job.id, ending)
        update_job(
            ledger, job.id, actual_cost_usd=rng.uniform(0, 80), current_step=rng.randint(0, 900), total_steps=900
        )
    return time.perf_counter() - start


def job_listing(workdir: Path) -> list[dict[str, Any]]:
    ledger = Ledger(workdir / "jobs.sqlite")
    populate = _populate(ledger)
    queries = {
        "page of 100, completed, by cost": JobQuery(group="completed", sort="cost", limit=100),
        "page of 100, active, by progress": JobQuery(group="active", sort="progress", limit=100),
        "page of 100, search 'job 99', by name": JobQuery(search="job 99", sort="name", limit=100),
        "all 10,000, by created": JobQuery(limit=None),
    }
    results = []
    for label, query in queries.items():
        times = _timed(lambda q=query: list_jobs(ledger, q), repeat=15)
        results.append(
            {
                "name": f"list jobs: {label}",
                "value": round(statistics.median(times) * 1000, 2),
                "unit": "ms (median of 15)",
                "target": "< 50" if "page" in label else "",
                "conditions": f"{JOBS} jobs in the ledger (filled in {populate:.1f} s), total count included",
            }
        )
    return results


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        return [event_ingest(Path(tmp)), *job_listing(Path(tmp))]

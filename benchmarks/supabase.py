"""Supabase benchmarks: a 300 MB resumable upload through the Storage stand-in (cut at 40%), and syncing a
ledger of finished jobs through a real PostgreSQL on 127.0.0.1 (push from one ledger, pull into another)."""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import presets
from engine.supabase_storage import SupabaseStore
from store.db import Ledger
from store.ingest import ingest
from store.jobs import create_job, transition
from store.status import JobStatus
from store.supabase import migration_sql
from store.sync import sync
from tests.standins.postgres import PostgresServer, execute_script, find_binaries
from tests.standins.supabase_storage import StorageStandIn

MB = 1024 * 1024
UPLOAD_MB = 300
JOBS = 200
STEPS = 100  # metric events per job; each job also has its stage, dataset, eval and artifact events


def _big_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for index in range(size // MB):
            out.write(hashlib.sha256(index.to_bytes(8, "big")).digest() * (MB // 32))


def upload(workdir: Path) -> list[dict[str, Any]]:
    source = workdir / "lorapod-full.zip"
    _big_file(source, UPLOAD_MB * MB)
    results = []
    for label, cut in (("uninterrupted", None), ("cut at 40%, resumed", 0.4)):
        times = []
        for _ in range(3):
            stand_in = StorageStandIn(workdir / f"server-{uuid.uuid4().hex[:6]}").start()
            try:
                stand_in.cut_at = int(source.stat().st_size * cut) if cut else None
                store = SupabaseStore(stand_in.url, stand_in.key, bucket="model-artifacts", state_dir=workdir / "st")
                start = time.perf_counter()
                store.upload(source, str(uuid.uuid4()))
                times.append(time.perf_counter() - start)
            finally:
                stand_in.stop()
        seconds = statistics.median(times)
        results.append(
            {
                "name": f"{UPLOAD_MB} MB resumable upload, {label}",
                "value": round(seconds, 2),
                "unit": f"s (median of 3; {UPLOAD_MB / seconds:,.0f} MB/s)",
                "target": "",
                "conditions": "TUS in 6 MB chunks to the Storage stand-in on 127.0.0.1 (in-process server writing to "
                "disk), sha256 of the file included; a cut costs one 0.5 s back-off and a HEAD",
            }
        )
    return results


def _ledger(path: Path) -> tuple[Ledger, int]:
    ledger = Ledger(path)
    spec = presets.get("smoke").to_spec("d.json")
    stamp = "2026-11-22T10:00:00+00:00"
    for index in range(JOBS):
        job = create_job(ledger, spec, name=f"bench {index}")
        transition(ledger, job.id, JobStatus.PROVISIONING)
        events: list[dict[str, Any]] = [
            {"type": "stage", "stage": "preprocessing"},
            {"type": "dataset", "total_steps": STEPS},
            {"type": "stage", "stage": "training"},
        ]
        events += [
            {"type": "metrics", "step": s, "total_steps": STEPS, "epoch": s / STEPS, "loss": 2.0} for s in range(STEPS)
        ]
        events += [
            {"type": "stage", "stage": "evaluating"},
            {"type": "eval", "eval_loss": 1.5, "adapter_perplexity": 4.5, "base_perplexity": 9.0},
            {"type": "artifact", "kind": "adapter", "path": f"/w/{job.id}.zip", "size_bytes": 1, "sha256": "a" * 64},
            {"type": "stage", "stage": "completed"},
        ]
        ingest(ledger, job.id, [{"seq": n, "ts": stamp, **e} for n, e in enumerate(events, start=1)])
    with ledger.read() as session:
        rows = sum(
            int(session.connection().exec_driver_sql(f"SELECT count(*) FROM {table}").scalar() or 0)
            for table in ("training_jobs", "model_artifacts", "training_metrics_history", "job_events")
        )
    return ledger, rows


def sync_rates(workdir: Path) -> list[dict[str, Any]]:
    if find_binaries() is None:
        return [{"name": "sync", "value": "skipped", "unit": "", "conditions": "PostgreSQL is not installed"}]
    server = PostgresServer().start()
    try:
        url = server.database()
        execute_script(url, migration_sql())
        source, rows = _ledger(workdir / "a.sqlite")
        start = time.perf_counter()
        pushed = sync(source, url, pull=False)
        push_s = time.perf_counter() - start
        start = time.perf_counter()
        pulled = sync(Ledger(workdir / "b.sqlite"), url, push=False)
        pull_s = time.perf_counter() - start
        sync(source, url)  # its first pull reads its own rows back (and changes nothing)
        start = time.perf_counter()
        sync(source, url)
        idle_s = time.perf_counter() - start
    finally:
        server.stop()
    conditions = (
        f"{JOBS} finished jobs, {rows:,} rows (jobs, artifacts, {STEPS} metric rows and {STEPS + 7} events each); "
        "batches of 500; PostgreSQL 15 on 127.0.0.1, fsync off; SQLite ledger in WAL"
    )
    return [
        {
            "name": "sync push, first time",
            "value": round(pushed.sent / push_s),
            "unit": f"rows/s ({pushed.sent:,} rows in {push_s:.2f} s)",
            "target": "",
            "conditions": conditions,
        },
        {
            "name": "sync pull into an empty ledger",
            "value": round(pulled.received / pull_s),
            "unit": f"rows/s ({pulled.received:,} rows in {pull_s:.2f} s)",
            "target": "",
            "conditions": conditions,
        },
        {
            "name": "sync with nothing new",
            "value": round(idle_s * 1000),
            "unit": "ms (push and pull)",
            "target": "",
            "conditions": "the pushing ledger again, once in step: nothing to send, nothing to read",
        },
    ]


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        return [*upload(Path(tmp)), *sync_rates(Path(tmp))]

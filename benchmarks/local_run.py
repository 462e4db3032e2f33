"""Local-run benchmarks: time from `lorapod run` to the first training step, event-to-ledger latency, and
the CPU the supervisor uses while it follows a job (the smoke preset on the sample, on this machine)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "brightrun-sample.json"


def _first_step_seconds(home: Path) -> float:
    """Seconds from launching `lorapod run --detach` to the engine's first metrics event."""
    env = {**os.environ, "LORAPOD_HOME": str(home)}
    before = set((home / "jobs").glob("*")) if (home / "jobs").exists() else set()
    start = time.time()
    command = [sys.executable, "-c", "from tui.cli import main; main()", "run", "--preset", "smoke"]
    subprocess.run([*command, "--dataset", str(SAMPLE), "--detach"], env=env, check=True, capture_output=True)
    deadline = time.time() + 600
    while time.time() < deadline:
        for workdir in set((home / "jobs").glob("*")) - before:
            path = workdir / "events.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            for line in lines:
                event = json.loads(line)
                if event["type"] == "metrics":
                    return datetime.fromisoformat(event["ts"]).timestamp() - start
        time.sleep(0.05)
    raise TimeoutError("no training step within 10 minutes")


def _wait_idle(home: Path) -> None:
    """Let a detached run finish before the next measurement."""
    deadline = time.time() + 600
    while time.time() < deadline:
        done = [p for p in (home / "jobs").glob("*/events.jsonl") if '"stage":"completed"' in p.read_text()]
        if len(done) == len(list((home / "jobs").glob("*/events.jsonl"))):
            return
        time.sleep(0.2)


def time_to_first_step() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        cold = _first_step_seconds(home)
        _wait_idle(home)
        warm = []
        for _ in range(3):
            warm.append(_first_step_seconds(home))
            _wait_idle(home)
    conditions = "smoke preset on samples/brightrun-sample.json, local provider, CPU"
    return [
        {
            "name": "run → first training step (first use)",
            "value": round(cold, 1),
            "unit": "s",
            "target": "",
            "conditions": conditions + "; includes building the demo model into the data dir",
        },
        {
            "name": "run → first training step",
            "value": round(statistics.median(warm), 1),
            "unit": "s (median of 3)",
            "target": "",
            "conditions": conditions + "; demo model already built; engine start-up (torch, transformers) included",
        },
    ]


def follow_figures() -> list[dict[str, Any]]:
    """Follow one job in this process: event-to-ledger latency and this process's CPU while following."""
    import presets
    from remote.supervisor import Supervisor, Update
    from store.db import Ledger
    from store.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LORAPOD_HOME"] = tmp
        settings = load_settings()
        ledger = Ledger(settings.paths.ledger)
        supervisor = Supervisor(ledger, settings)
        spec = presets.get("smoke").to_spec(str(SAMPLE), ["num_epochs=12", "log_every_steps=1"])
        submission = supervisor.start(spec)
        latencies: list[float] = []

        def seen(update: Update) -> None:
            now = time.time()
            latencies.extend(now - datetime.fromisoformat(e["ts"]).timestamp() for e in update.events)

        cpu_start, wall_start = time.process_time(), time.monotonic()
        threads_before = threading.active_count()
        supervisor.follow(submission.job.id, on_update=seen)
        cpu, wall = time.process_time() - cpu_start, time.monotonic() - wall_start
        del os.environ["LORAPOD_HOME"]
    ordered = sorted(latencies)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    conditions = f"{len(latencies)} events of a smoke job (12 epochs), polled every 0.25 s by the following process"
    return [
        {
            "name": "event written → ledger (median)",
            "value": round(statistics.median(latencies) * 1000),
            "unit": "ms",
            "target": "< 1000",
            "conditions": conditions + f"; p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms",
        },
        {
            "name": "supervisor CPU while following",
            "value": round(cpu / wall * 100, 1),
            "unit": "% of one core",
            "target": "",
            "conditions": f"{cpu:.2f} s CPU over {wall:.1f} s of following (threads: {threads_before})",
        },
    ]


def run() -> list[dict[str, Any]]:
    return [*time_to_first_step(), *follow_figures()]

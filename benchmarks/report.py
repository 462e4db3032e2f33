"""Client report benchmarks: how long ``lorapod report`` takes to write the page, and how big the page is.

The jobs are a balanced 70B run as the ledger holds one: 1,200 logged steps (loss, learning rate, an eval loss
every 50), an eval with per-persona, arc and topic groups and 8 side-by-side replies, three packages. Rendering
depends on what the ledger holds, not on how the job was trained, so no training runs here.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import presets
from store.artifacts import record_artifact
from store.db import Ledger
from store.events import record_events
from store.jobs import create_job, transition, update_job
from store.metrics import record_metrics
from store.models import utcnow
from store.report import build_report

RUNS = 5
STEPS = 1200
ROOT = Path(__file__).resolve().parent.parent


def _job(ledger: Ledger, index: int) -> str:
    spec = presets.get("balanced").to_spec("brightrun.json", [f"lora_r={16 << index}"])
    job = create_job(ledger, spec.model_copy(update={"job_id": None}), name=f"balanced r{16 << index}")
    rows = [
        {"step": s, "epoch": s / 400, "loss": 2.2 * math.exp(-s / 500) + 0.9 + 0.05 * math.sin(s),
         "learning_rate": 2e-4 * min(1.0, s / 36) * (1 + math.cos(math.pi * s / STEPS)) / 2,
         "eval_loss": 1.6 * math.exp(-s / 600) + 1.1 if s % 50 == 0 else None}
        for s in range(1, STEPS + 1)
    ]  # fmt: skip
    record_metrics(ledger, job.id, rows)
    groups = {
        key: {f"{key}-{g}": {"base_perplexity": 9.0 + g, "adapter_perplexity": 5.5 + g / 2} for g in range(6)}
        for key in ("persona", "emotional_arc", "topic")
    }
    reply = "I hear how heavy this feels. Let's look at the numbers together, one step at a time. " * 6
    generations = [{"prompt": f"Prompt {i}: " + reply[:200], "reference": reply, "base": reply, "adapter": reply}
                   for i in range(8)]  # fmt: skip
    record_events(ledger, job.id, [
        {"seq": 1, "type": "dataset", "ts": utcnow(), "examples": 583, "train_examples": 525, "eval_examples": 58,
         "tokens": 1_450_000, "supervised_tokens": 610_000, "packed_sequences": 360, "steps_per_epoch": 400,
         "total_steps": STEPS, "epochs": 3},
        {"seq": 2, "type": "eval", "ts": utcnow(), "base_perplexity": 9.8, "adapter_perplexity": 5.9,
         "eval_loss": 1.77, "tokens": 61_000, "groups": groups, "generations": generations},
    ])  # fmt: skip
    for kind, size in (("adapter", 830_000_000), ("full", 845_000_000), ("deploy", 831_000_000)):
        record_artifact(ledger, job.id, artifact_type=kind, storage_path=f"file:///x/{job.id}-{kind}.zip",
                        size_bytes=size, sha256="ab" * 32)  # fmt: skip
    for status in ("training", "completed"):
        transition(ledger, job.id, status)
    update_job(ledger, job.id, gpu_type="NVIDIA H100 80GB HBM3", actual_cost_usd=31.4, gpu_hours=10.5)
    return str(job.id)


def _timed(call: Any) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(RUNS):
        start = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - start) * 1000)
    return times, result


def _figure(name: str, times: list[float], conditions: str, target: str) -> dict[str, Any]:
    return {"name": name, "value": round(statistics.median(times)), "unit": f"ms (median of {RUNS})",
            "target": target, "conditions": conditions}  # fmt: skip


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        ledger = Ledger(home / "ledger.sqlite")
        jobs = [_job(ledger, i) for i in range(3)]
        out = home / "report.html"
        build_report(ledger, jobs[:1], out)  # first render: matplotlib's font cache and imports, not measured
        one, path = _timed(lambda: build_report(ledger, jobs[:1], out))
        one_size = path.stat().st_size
        three, path = _timed(lambda: build_report(ledger, jobs, out))
        three_size = path.stat().st_size
        ledger.close()
        env = {**os.environ, "LORAPOD_HOME": str(home), "LORAPOD_SUPERVISOR_IDLE_EXIT_MINUTES": "0"}
        command = [sys.executable, "-c", "from tui.cli import main; main()", "report", jobs[0], "-o", str(out)]
        cold, _ = _timed(lambda: subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True))
    # This machine is shared: the load while measuring says how far the figures are from an idle one's.
    load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs while measured"
    shape = f"{STEPS} logged steps, 3 × 6 perplexity groups, 8 side-by-side replies, 3 packages; {load}"
    return [
        _figure("report: one job, rendered", one, f"{shape}; page {one_size / 1e3:.0f} KB", "< 2000"),
        _figure("report: three jobs compared", three, f"the same, 3 jobs; page {three_size / 1e3:.0f} KB", "< 5000"),
        _figure("report: `lorapod report JOB` end to end", cold,
                "a fresh process: imports (matplotlib, Jinja2), the ledger, one job's page written", "< 5000"),
    ]  # fmt: skip

"""Jobs that govern themselves: how soon the engine stops after crossing a cost limit, and what the background
supervisor costs while it follows ten live jobs (on this machine, CPU)."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "brightrun-sample.json"
LORAPOD = [sys.executable, "-c", "from tui.cli import main; main()"]


def _events(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _stop_supervisor(home: Path) -> None:
    from remote.daemon import stop
    from store.settings import resolve_paths

    stop(resolve_paths({"LORAPOD_HOME": str(home)}))


def _run(home: Path, *overrides: str) -> list[dict[str, Any]]:
    """One detached smoke job with nothing else running (the supervisor is stopped); its events once it ended."""
    rate = 3600.0  # $1 a second: a cost limit in dollars is its crossing time in seconds
    env = {**os.environ, "LORAPOD_HOME": str(home), "LORAPOD_LOCAL_RATE_USD_PER_HOUR": f"{rate:g}"}
    before = set((home / "jobs").glob("*")) if (home / "jobs").exists() else set()
    command = [*LORAPOD, "run", "--preset", "smoke", "--dataset", str(SAMPLE), "--detach"]
    for override in overrides:
        command += ["--set", override]
    subprocess.run(command, env=env, check=True, capture_output=True)
    _stop_supervisor(home)  # the engine alone keeps the limit
    (workdir,) = set((home / "jobs").glob("*")) - before
    deadline = time.time() + 600
    while time.time() < deadline:
        events = _events(workdir)
        if events and events[-1]["type"] == "stage" and events[-1]["stage"] in ("cancelled", "completed", "failed"):
            return events
        time.sleep(0.1)
    raise TimeoutError("the job did not end within 10 minutes")


def _engine_clock(events: list[dict[str, Any]]) -> dict[str, float]:
    """When each stage began, in seconds of the engine's own clock (its final cost event ties ts to it)."""
    cost = [e for e in events if e["type"] == "cost"][-1]
    started = datetime.fromisoformat(cost["ts"]).timestamp() - float(cost["elapsed"])
    return {e["stage"]: datetime.fromisoformat(e["ts"]).timestamp() - started for e in events if e["type"] == "stage"}


def limit_figures() -> list[dict[str, Any]]:
    longer = "num_epochs=12"  # training long enough that where the limit falls does not drift out of it
    stops: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        # Only the job's own max_cost_usd may stop it: the month's remainder and the hard cap are set out of reach.
        for name, value in (
            ("supervisor_idle_exit_minutes", "0"),
            ("monthly_budget_usd", "1000000"),
            ("hard_cap_usd", "1000000"),
            ("per_job_ceiling_usd", "1000000"),
        ):
            subprocess.run([*LORAPOD, "config", "set", name, value],
                           env={**os.environ, "LORAPOD_HOME": str(home)}, check=True, capture_output=True)  # fmt: skip
        _run(home, longer)  # builds the demo model, so the runs measured start alike
        clock = _engine_clock(_run(home, longer))
        # Cross mid-way through loading the model, and mid-way through training, as a reference run had them.
        for cross_at in (
            (clock["model_loading"] + clock["training"]) / 2,
            (clock["training"] + clock["evaluating"]) / 2,
        ):
            for _ in range(2):
                events = _run(home, longer, f"max_cost_usd={cross_at:.2f}")
                if events[-1]["stage"] != "cancelled":
                    continue  # quicker than the reference: it finished under the limit
                cost = [e for e in events if e["type"] == "cost"][-1]
                stopped_in = [e["stage"] for e in events if e["type"] == "stage"][-2]
                stops.setdefault(stopped_in, []).append(
                    (round(cross_at, 2), float(cost["elapsed"]) - round(cross_at, 2))
                )
    return [
        {
            "name": f"limit crossed → engine stopped, in {stage.replace('_', ' ')}",
            "value": round(max(gap for _, gap in found), 2),
            "unit": f"s (worst of {len(found)})",
            "target": "within one metrics interval",
            "conditions": "smoke job (12 epochs), local, nothing else running; crossed at "
            + ", ".join(f"{at:.1f} s → stopped {gap:.2f} s later" for at, gap in found)
            + ("; then a checkpoint of the step" if stage == "training" else "; no step to finish, the stage is cut"),
        }
        for stage, found in sorted(stops.items())
    ]


FAKE_ENGINE = textwrap.dedent(
    """
    # A stand-in for a training engine: one metrics event every 0.2 s in the workdir named on its command line.
    import json, sys, time
    from datetime import UTC, datetime
    workdir = sys.argv[1]
    seq = 0
    with open(workdir + "/events.jsonl", "a", buffering=1) as out:
        while True:
            seq += 1
            out.write(json.dumps({"seq": seq, "type": "metrics", "ts": datetime.now(UTC).isoformat(),
                                  "step": seq, "total_steps": 10**6, "loss": 1.0}) + "\\n")
            time.sleep(0.2)
    """
)


def supervisor_figures(jobs: int = 10, seconds: float = 30.0) -> list[dict[str, Any]]:
    """The background supervisor's CPU and memory while it follows ``jobs`` live local jobs."""
    import psutil

    import presets
    from store.attempts import start_attempt
    from store.db import Ledger
    from store.jobs import create_job, transition
    from store.status import JobStatus

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        ledger = Ledger(home / "ledger.sqlite")
        script = home / "fake_engine.py"
        script.write_text(FAKE_ENGINE)
        engines = []
        for _ in range(jobs):
            job = create_job(ledger, presets.get("smoke").to_spec(str(SAMPLE)).model_copy(update={"job_id": None}))
            workdir = home / "jobs" / str(job.id)
            workdir.mkdir(parents=True)
            process = subprocess.Popen([sys.executable, str(script), str(workdir)], start_new_session=True)
            engines.append(process)
            handle = {"provider": "local", "job_id": str(job.id), "workdir": str(workdir), "pid": process.pid}
            start_attempt(ledger, job.id, provider="local", handle=handle, rate_usd_per_hour=1.0, gpu_count=0)
            transition(ledger, job.id, JobStatus.TRAINING)
        ledger.close()
        env = {**os.environ, "LORAPOD_HOME": str(home)}
        daemon = subprocess.Popen([sys.executable, "-m", "remote.daemon", "--quiet"], env=env, cwd=ROOT)
        try:
            time.sleep(5)  # followers set up, the backlog read
            process = psutil.Process(daemon.pid)
            process.cpu_percent(None)
            rss = []
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                time.sleep(1)
                rss.append(process.memory_info().rss)
            cpu = process.cpu_percent(None)
            following = json.loads((home / "supervisor.json").read_text())["following"]
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            for engine in engines:
                engine.kill()
    conditions = (
        f"{len(following)} live local jobs, each writing 5 events/s; the supervisor's own process over "
        f"{seconds:.0f} s (rounds every 0.5 s)"
    )
    return [
        {"name": f"supervisor CPU, {jobs} live jobs", "value": round(cpu, 1), "unit": "% of one core",
         "target": "", "conditions": conditions},
        {"name": f"supervisor memory, {jobs} live jobs", "value": round(statistics.median(rss) / 2**20, 1),
         "unit": "MiB RSS (median)", "target": "", "conditions": conditions + f"; peak {max(rss) / 2**20:.1f} MiB"},
    ]  # fmt: skip


def run() -> list[dict[str, Any]]:
    return [*limit_figures(), *supervisor_figures()]


__all__ = ["run"]

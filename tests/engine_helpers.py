"""Helpers for engine tests: a tiny job spec on the demo model, runs in a subprocess, and event reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import presets
from engine.config import JobSpec
from tests.conftest import ROOT

SAMPLE = ROOT / "samples" / "brightrun-sample.json"


def tiny_spec(model_dir: Path, dataset: Path = SAMPLE, *overrides: str, job_id: str | None = None) -> JobSpec:
    """The smoke preset on the demo model, small enough for a test: every step logged, checkpoints often."""
    base = [
        f"base_model={model_dir}",
        "max_seq_length=512",
        "num_epochs=2",
        "batch_size=2",
        "gradient_accumulation_steps=1",
        "save_steps=3",
        "save_every_minutes=30",
        "log_every_steps=1",
        "status_every_steps=2",
        "eval_every_steps=4",
        "eval_generations=1",
        "max_new_tokens=8",
        "learning_rate=5e-3",
    ]
    spec = presets.get("smoke").to_spec(str(dataset), [*base, *overrides])
    return spec.model_copy(update={"job_id": job_id or "00000000-0000-4000-8000-0000000000aa"})


def write_spec(spec: JobSpec, path: Path) -> Path:
    path.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    return path


def engine_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "LORAPOD_HEARTBEAT_S": "1", "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_engine(spec_path: Path, workdir: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "--spec", str(spec_path), "--workdir", str(workdir)],
        cwd=ROOT,
        env=engine_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_engine(spec_path: Path, workdir: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "run", "--spec", str(spec_path), "--workdir", str(workdir)],
        cwd=ROOT,
        env=engine_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.endswith("}")]


def of_type(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in items if e["type"] == kind]


def stages(items: list[dict[str, Any]]) -> list[str]:
    return [e["stage"] for e in of_type(items, "stage")]


def step_losses(items: list[dict[str, Any]]) -> dict[int, float]:
    """The training loss logged at each step (the last one logged wins, as after a resume)."""
    return {e["step"]: e["loss"] for e in of_type(items, "metrics") if e.get("loss") is not None}


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")


def kill(process: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    process.send_signal(sig)

"""CLI benchmarks: the wall time of ``lorapod --help`` as a new process."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

RUNS = 15


def help_wall_time() -> dict[str, Any]:
    command = [shutil.which("lorapod") or sys.executable, "--help"]
    if command[0] == sys.executable:
        command = [sys.executable, "-c", "from tui.cli import main; main()", "--help"]
    subprocess.run(command, check=True, capture_output=True)  # warm the file cache
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    baseline = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, capture_output=True)
        baseline.append(time.perf_counter() - start)
    bare_ms = statistics.median(baseline) * 1000
    return {
        "name": "lorapod --help",
        "value": round(statistics.median(times) * 1000, 1),
        "unit": f"ms wall (median of {RUNS})",
        "target": "",
        "conditions": f"new process each time; a bare `python -c pass` takes {bare_ms:.1f} ms",
    }


def run() -> list[dict[str, Any]]:
    return [help_wall_time()]

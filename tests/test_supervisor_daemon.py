"""``lorapod supervisor``: one background supervisor per data dir, started, asked about, stopped and idle-exited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.engine_helpers import wait_for


def lorapod(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tui.cli import main; main()", *args], cwd=ROOT,
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def status() -> dict[str, object]:
    result = lorapod("supervisor", "status", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_one_supervisor_per_data_dir_started_asked_about_and_stopped(lorapod_home: Path) -> None:
    stay = {"LORAPOD_SUPERVISOR_IDLE_EXIT_MINUTES": "10"}
    assert status()["running"] is False
    started = lorapod("supervisor", "start", env=stay)
    assert started.returncode == 0 and "supervisor running (pid" in started.stdout, started.stderr
    first = status()
    assert first["running"] is True and isinstance(first["pid"], int)
    again = lorapod("supervisor", "start", env=stay)  # a second start finds the first
    assert again.returncode == 0 and status()["pid"] == first["pid"]
    foreground = lorapod("supervisor", "run", env=stay)  # nor can a second one run in the foreground
    assert foreground.returncode == 1 and "already runs" in foreground.stderr
    wait_for(lambda: status()["updated_at"] is not None, timeout=10)
    assert status()["following"] == []
    stopped = lorapod("supervisor", "stop")
    assert stopped.returncode == 0 and f"supervisor stopped (pid {first['pid']})" in stopped.stdout
    assert status()["running"] is False
    logs = lorapod("supervisor", "logs", "-n", "5")
    assert f"supervisor {first['pid']} started" in logs.stdout or f"supervisor {first['pid']} stopped" in logs.stdout
    assert "not running" in lorapod("supervisor", "stop").stdout


def test_it_leaves_once_nothing_is_live(lorapod_home: Path) -> None:
    assert lorapod("supervisor", "start", env={"LORAPOD_SUPERVISOR_IDLE_EXIT_MINUTES": "0"}).returncode == 0
    wait_for(lambda: status()["running"] is False, timeout=20)

"""The real `lorapod` in a real terminal (tmux): it opens the dashboard, draws the jobs, and quits on q."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from store.db import Ledger
from tests.conftest import ROOT
from tests.tui_fixtures import populate

pytestmark = pytest.mark.slow


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def _screen(session: str) -> str:
    return _tmux("capture-pane", "-p", "-t", session)


def _wait_for(session: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _screen(session)
        if text in screen:
            return screen
        time.sleep(0.25)
    raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")


@pytest.fixture
def tmux() -> str:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is needed (.ci/run installs it)")
        pytest.skip("tmux is not installed here")
    return f"lorapod-test-{uuid.uuid4().hex[:8]}"


def test_lorapod_opens_the_dashboard_in_a_real_terminal(tmux: str, lorapod_home: Path) -> None:
    populate(Ledger(lorapod_home / "ledger.sqlite"))
    command = f"cd {ROOT} && LORAPOD_HOME={lorapod_home} {sys.executable} -c 'from tui.cli import main; main()'"
    _tmux("new-session", "-d", "-s", tmux, "-x", "120", "-y", "40", command)
    try:
        screen = _wait_for(tmux, "sorted by Created")
        assert "lorapod" in screen and "18-conver" in screen and "interrupted" in screen
        assert "2 active" in screen and "$21.55 of $400.00" in screen
        _tmux("send-keys", "-t", tmux, "?")
        assert "Job monitor" in _wait_for(tmux, "Job monitor")
        _tmux("send-keys", "-t", tmux, "Escape")
        _wait_for(tmux, "sorted by Created")
        _tmux("send-keys", "-t", tmux, "Enter")
        _wait_for(tmux, "1 Charts")
        _tmux("send-keys", "-t", tmux, "q")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            sessions = subprocess.run(["tmux", "has-session", "-t", tmux], capture_output=True, check=False)
            if sessions.returncode != 0:
                break
            time.sleep(0.25)
        else:
            raise AssertionError("lorapod did not quit on q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", tmux], capture_output=True, check=False)

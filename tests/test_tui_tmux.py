"""The real `lorapod` in a real terminal (tmux): it opens the dashboard, draws the jobs, and quits on q."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from store.db import Ledger
from tests.conftest import ROOT
from tests.tui_fixtures import populate, this_month

pytestmark = pytest.mark.slow


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def _screen(session: str) -> str:
    return _tmux("capture-pane", "-p", "-t", session)


def _wait_for(session: str, *texts: str, timeout: float = 30) -> str:
    """The screen once every text is on it at the same time (a capture can catch a repaint half-way)."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _screen(session)
        if all(text in screen for text in texts):
            return screen
        time.sleep(0.25)
    raise AssertionError(f"{texts!r} never appeared together; the screen was:\n{screen}")


@pytest.fixture
def tmux() -> str:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is needed (.ci/run installs it)")
        pytest.skip("tmux is not installed here")
    return f"lorapod-test-{uuid.uuid4().hex[:8]}"


def test_lorapod_opens_the_dashboard_in_a_real_terminal(tmux: str, lorapod_home: Path) -> None:
    # The real program reads the real clock: the jobs are dated in this month, whatever today is.
    populate(Ledger(lorapod_home / "ledger.sqlite"), this_month(datetime.now(UTC)))
    # COLUMNS and LINES (set by test tooling) would override the terminal's real size: the user's shell has none.
    command = (
        f"cd {ROOT} && unset COLUMNS LINES && LORAPOD_HOME={lorapod_home} {sys.executable} "
        "-c 'from tui.cli import main; main()'"
    )
    _tmux("new-session", "-d", "-s", tmux, "-x", "120", "-y", "40", command)
    try:
        _wait_for(tmux, "lorapod", "sorted by Created", "18-conver", "interrupted", "2 active", "$21.55 of $400.00")
        _tmux("send-keys", "-t", tmux, "?")
        assert "Everything is on the keyboard" in _wait_for(tmux, "Everything is on the keyboard", "the jobs table")
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

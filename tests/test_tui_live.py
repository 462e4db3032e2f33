"""The dashboard tells the truth, live: a job started from another shell appears, moves and ends on screen
with its last eval loss, no key pressed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from store.metrics import metrics_history
from store.settings import load_settings
from tests.conftest import ROOT
from tests.engine_helpers import SAMPLE
from tui.app import LorapodApp
from tui.backend import Backend
from tui.screens.jobs import JobsScreen
from tui.screens.monitor import MonitorScreen
from tui.widgets.job_table import JobTable

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def wait_until(pilot: Any, condition: Any, timeout: float, explain: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.25)
    raise TimeoutError(f"the dashboard did not get there in time: {explain() if explain else ''}")


def _table_text(app: LorapodApp) -> str:
    table = app.screen.query_one(JobTable)
    return " ".join(str(cell) for row in range(table.row_count) for cell in table.get_row_at(row))


async def test_a_job_started_from_another_shell_is_followed_to_completed_with_its_last_eval_loss(
    lorapod_home: Path, demo_model: Path
) -> None:
    shutil.copytree(demo_model, lorapod_home / "models" / "tiny-llama")
    backend = Backend(load_settings())
    app = LorapodApp(backend)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        assert isinstance(app.screen, JobsScreen)
        command = [sys.executable, "-c", "from tui.cli import main; main()", "run", "--preset", "smoke"]
        shell = subprocess.run(
            [*command, "--dataset", str(SAMPLE), "--detach", "--name", "from the other shell"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert shell.returncode == 0, shell.stderr
        await wait_until(pilot, lambda: "from the" in _table_text(app), 30, lambda: _table_text(app))
        await pilot.press("enter")  # its monitor, while it runs
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 10)
        monitor = app.screen
        assert isinstance(monitor, MonitorScreen)
        job_id = monitor.job_id
        # From here on no key is pressed.
        await wait_until(
            pilot, lambda: monitor.detail is not None and monitor.detail.job.status == "completed", 300,
            lambda: monitor.detail.job.status if monitor.detail else None,
        )  # fmt: skip
        evals = [
            m.eval_loss for m in metrics_history(backend.ledger, backend.job(job_id).id) if m.eval_loss is not None
        ]
        assert evals, "the smoke job evaluates while it trains"
        stats = str(monitor.query_one("#stats").content)  # type: ignore[attr-defined]
        await wait_until(pilot, lambda: f"eval {evals[-1]:.4f}" in str(monitor.query_one("#stats").content), 10,  # type: ignore[attr-defined]
                         lambda: stats)  # fmt: skip

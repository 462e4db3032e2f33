"""The dashboard's main flows with real local jobs: start one with the wizard, watch it, download its
deploy package; cancel a running job; retry a failed one with its suggested values."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

import presets
from engine.packaging import verify_package
from store.db import Ledger
from store.events import list_events, record_events
from store.jobs import create_job, transition
from store.settings import load_settings
from store.status import JobStatus
from tests.engine_helpers import SAMPLE
from tui.app import LorapodApp
from tui.backend import Backend
from tui.dialogs.download import DownloadDialog
from tui.dialogs.retry import RetryDialog
from tui.dialogs.wizard import NewJobWizard
from tui.screens.monitor import MonitorScreen

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
SIZE = (120, 40)


@pytest.fixture
def backend(lorapod_home: Path, demo_model: Path) -> Backend:
    shutil.copytree(demo_model, lorapod_home / "models" / "tiny-llama")
    return Backend(load_settings())


async def wait_until(pilot: Any, condition: Any, timeout: float = 300.0, explain: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.25)
    raise TimeoutError(f"the dashboard did not get there in time: {explain() if explain else ''}")


async def test_wizard_starts_a_smoke_job_the_monitor_follows_it_and_the_deploy_package_downloads(
    backend: Backend, tmp_path: Path
) -> None:
    app = LorapodApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        await pilot.press("n")
        await pilot.pause(0.3)
        wizard = app.screen
        assert isinstance(wizard, NewJobWizard)
        await pilot.press(*str(SAMPLE))
        await pilot.press("enter")
        await wait_until(pilot, lambda: wizard.inspection is not None, 30)
        assert wizard.inspection is not None and wizard.inspection.report["ok"]
        await pilot.press("ctrl+n")  # → preset
        await pilot.pause(0.2)
        await pilot.press("down", "down", "down", "enter")  # smoke, the last card
        await pilot.pause(0.2)
        assert wizard.preset_name == "smoke"
        await pilot.press("ctrl+n")  # → resources
        await pilot.press(*"from the wizard")
        await pilot.press("ctrl+n")  # → review
        await wait_until(pilot, lambda: wizard.query_one("#review-text").content != "", 30)  # type: ignore[attr-defined]
        started = time.monotonic()
        await pilot.press("enter")  # Start (focused)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), 15)
        assert time.monotonic() - started < 15
        assert any("Starting the job" in n.message for n in app._notifications)
        monitor = app.screen
        assert isinstance(monitor, MonitorScreen)
        await wait_until(pilot, lambda: backend.job(monitor.job_id).status == "completed")
        await wait_until(pilot, lambda: monitor.detail is not None and monitor.detail.job.status == "completed", 10)
        job = backend.job(monitor.job_id)
        assert job.name == "from the wizard" and job.preset == "smoke"
        assert monitor.last_step == job.total_steps  # the charts got every step
        seqs = [event.seq for event in list_events(backend.ledger, job.id)]
        assert seqs == list(range(1, len(seqs) + 1))  # none lost, the first included
        assert {"preprocessing", "model_loading", "training"} <= monitor.stages_seen

        await pilot.press("d")
        await pilot.pause(0.3)
        dialog = app.screen
        assert isinstance(dialog, DownloadDialog)
        folder = dialog.query_one("#folder")
        folder.value = str(tmp_path / "out")  # type: ignore[attr-defined]
        await pilot.click("#go")
        await wait_until(pilot, lambda: any(n.title == "Downloaded" for n in app._notifications), 30)
    (package,) = (tmp_path / "out").glob("*-deploy.zip")
    assert verify_package(package) == []
    with zipfile.ZipFile(package) as archive:
        assert "inference.py" in archive.namelist()


async def test_cancel_a_running_job_from_the_monitor(backend: Backend) -> None:
    spec = presets.get("smoke").to_spec(str(SAMPLE), ["num_epochs=40"])
    submission = backend.start(spec)
    job_id = str(submission.job.id)
    app = LorapodApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        app.open_job(job_id)
        await wait_until(pilot, lambda: backend.job(job_id).current_step >= 3, 300)
        await pilot.press("c")
        await pilot.pause(0.3)
        assert "spent so far" in str(app.screen.query_one(".dialog-detail").content)
        await pilot.press("y")
        await wait_until(pilot, lambda: backend.job(job_id).status == "cancelled", 300)
        assert backend.job(job_id).error_message == "cancelled from the dashboard" or "cancel" in (
            backend.job(job_id).error_message or ""
        )


async def test_retry_a_failed_job_with_its_suggested_values(backend: Backend) -> None:
    ledger: Ledger = backend.ledger
    failed = create_job(ledger, presets.get("smoke").to_spec(str(SAMPLE)), name="too big")
    transition(ledger, failed.id, JobStatus.TRAINING)
    record_events(
        ledger,
        failed.id,
        [
            {"seq": 1, "ts": "2026-11-22T10:00:00Z", "type": "error", "category": "out_of_memory", "message": "OOM",
             "hint": "halve batch_size", "suggested": {"batch_size": 1, "gradient_accumulation_steps": 2}},
        ],
    )  # fmt: skip
    transition(ledger, failed.id, JobStatus.FAILED, error_category="out_of_memory", error_message="OOM")
    app = LorapodApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        app.open_job(str(failed.id))
        await pilot.pause(0.5)
        await pilot.press("r")
        await pilot.pause(0.5)
        dialog = app.screen
        assert isinstance(dialog, RetryDialog)
        await wait_until(pilot, lambda: dialog.query_one("#diff").row_count >= 2, 10)  # type: ignore[attr-defined]
        dialog.query_one("#start").press()  # type: ignore[attr-defined]
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, MonitorScreen) and app.screen.job_id != str(failed.id),
            30,
            lambda: [n.message for n in app._notifications],
        )
        new_id = app.screen.job_id  # type: ignore[attr-defined]
        await wait_until(pilot, lambda: backend.job(new_id).status == "completed")
    new = backend.job(new_id)
    assert (new.hyperparameters["batch_size"], new.hyperparameters["gradient_accumulation_steps"]) == (1, 2)
    assert new.parent_job_id == failed.id and new.retry_count == 1

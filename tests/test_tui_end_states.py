"""How the dashboard shows a job that ended: where it stopped, frozen figures, resume and cancel that say what
they did."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import ProgressBar, Select

import presets
from store.attempts import start_attempt
from store.budget import Decision
from store.db import Ledger
from store.ingest import ingest
from store.jobs import create_job, get_job, transition
from store.settings import load_settings
from store.status import JobStatus
from tests.test_tui import monitor_of, names, settle, text_of
from tests.tui_fixtures import DATASET, NOW, job_uuid, populate
from tui.app import LorapodApp
from tui.backend import Backend
from tui.screens.monitor import MonitorScreen
from tui.widgets.job_table import JobTable

SIZE = (120, 40)
pytestmark = pytest.mark.anyio


class Clock:
    """A clock the test moves on."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> Any:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend(lorapod_home: Path, clock: Clock) -> Backend:
    settings = load_settings()
    populate(Ledger(settings.paths.ledger))
    return Backend(settings, clock=clock)


def app_for(backend: Backend) -> LorapodApp:
    return LorapodApp(backend, follow=False)


@pytest.mark.parametrize(
    ("job", "mark", "word"),
    [("00000003", "✖ Training", "failed"), ("00000004", "⊘ Training", "cancelled"), ("00000006", "⚠ Training", "")],
)
async def test_the_stepper_marks_the_step_a_job_ended_on(backend: Backend, job: str, mark: str, word: str) -> None:
    async with app_for(backend).run_test(size=SIZE) as pilot:
        screen = await monitor_of(pilot, job)
        stepper = text_of(screen.query_one("#stepper"))
        assert mark in stepper and "✔ Loading" in stepper
        assert "✔ Training" not in stepper and "● Training" not in stepper
        assert "○ Evaluating" in stepper
        assert word in stepper


async def test_an_ended_job_shows_its_cost_and_time_frozen(backend: Backend, clock: Clock) -> None:
    async with app_for(backend).run_test(size=SIZE) as pilot:
        for job in ("00000001", "00000003", "00000004", "00000006"):
            screen = await monitor_of(pilot, job)
            first = text_of(screen.query_one("#stats"))
            assert "cost $" in first and "cost so far" not in first and "ran " in first
            clock.now += timedelta(hours=3)
            screen.refresh_data()
            await settle(pilot)
            assert text_of(screen.query_one("#stats")).splitlines()[0] == first.splitlines()[0], job
            assert not screen.ticker._active.is_set(), job  # nothing left to poll for
            pilot.app.pop_screen()
        screen = await monitor_of(pilot, "00000002")
        assert "cost so far $" in text_of(screen.query_one("#stats"))
        assert screen.ticker._active.is_set()


async def test_a_job_that_failed_before_training_has_a_still_progress_bar(backend: Backend) -> None:
    ledger = backend.ledger
    spec = presets.get("smoke").to_spec(DATASET).model_copy(update={"job_id": str(uuid.uuid4())})
    job = create_job(ledger, spec, name="bad data")
    ingest(
        ledger,
        job.id,
        [
            {"seq": 1, "ts": NOW.isoformat(), "type": "stage", "stage": "preprocessing"},
            {
                "seq": 2,
                "ts": NOW.isoformat(),
                "type": "error",
                "category": "dataset",
                "message": "no examples",
                "hint": "check the file",
            },
            {"seq": 3, "ts": NOW.isoformat(), "type": "stage", "stage": "failed", "message": "dataset: no examples"},
        ],
    )
    async with app_for(backend).run_test(size=SIZE) as pilot:
        screen = await monitor_of(pilot, str(job.id)[:8])
        bar = screen.query_one(ProgressBar)
        assert bar.total is not None  # an indeterminate bar animates forever
        assert "✖ Preprocessing" in text_of(screen.query_one("#stepper"))
        assert "dataset: no examples" in text_of(screen.query_one("#stats"))


async def test_a_cancel_reason_is_shown_once_without_a_prefix(backend: Backend) -> None:
    async with app_for(backend).run_test(size=SIZE) as pilot:
        screen = await monitor_of(pilot, "00000004")
        stats = text_of(screen.query_one("#stats"))
        assert "cancelled by the user" in stats and "cancelled: " not in stats


async def test_interrupted_jobs_have_a_filter(backend: Backend) -> None:
    async with app_for(backend).run_test(size=SIZE) as pilot:
        await settle(pilot)
        pilot.app.screen.query_one("#group", Select).value = "interrupted"
        await settle(pilot)
        assert names(pilot.app.screen.query_one(JobTable)) == ["lost pod"]


async def test_R_resumes_an_interrupted_job_and_says_why_when_refused(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remote.supervisor import BudgetRefused

    asked: list[str] = []

    def refused(job_id: Any, *, force: bool = False) -> Any:
        asked.append(str(job_id))
        raise BudgetRefused(Decision(allowed=False, reasons=["the month would pass its $400.00 budget"]))

    monkeypatch.setattr(backend.supervisor, "resume", refused)
    async with app_for(backend).run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("R")  # the cursor starts on the newest job, the interrupted "lost pod"
        await settle(pilot)
        assert asked == [str(job_uuid(6))]
        toasts = [(n.title, n.message) for n in pilot.app._notifications]
        assert (
            "Could not resume (BudgetRefused)",
            "refused by the budget: the month would pass its $400.00 budget",
        ) in toasts

        def resumed(job_id: Any, *, force: bool = False) -> Any:
            asked.append(str(job_id))
            return transition(backend.ledger, job_id, JobStatus.PROVISIONING)

        monkeypatch.setattr(backend.supervisor, "resume", resumed)
        screen = await monitor_of(pilot, "00000006")
        await pilot.press("R")
        await settle(pilot, 0.6)
        assert len(asked) == 2
        assert any(n.title == "Resumed" for n in pilot.app._notifications)
        assert isinstance(screen, MonitorScreen)
        assert "provisioning" in text_of(screen.query_one("#progress-text"))
        assert screen.ticker._active.is_set()  # live again: the monitor polls again


async def test_the_palette_offers_resume_for_interrupted_jobs_only(backend: Backend) -> None:
    from tui.commands import LorapodCommands

    async with app_for(backend).run_test(size=SIZE) as pilot:
        await settle(pilot)
        provider = LorapodCommands(pilot.app.screen)
        await provider.startup()
        resumes = [text for text, _, _ in provider.commands if text.startswith("Resume")]
        assert resumes == ["Resume job 00000006 lost pod"]


async def test_cancel_on_a_job_with_no_live_engine_says_so(backend: Backend) -> None:
    ledger = backend.ledger
    spec = presets.get("smoke").to_spec(DATASET).model_copy(update={"job_id": str(uuid.uuid4())})
    job = create_job(ledger, spec, name="ghost")
    workdir = backend.settings.paths.ledger.parent / "jobs" / str(job.id)
    start_attempt(ledger, job.id, provider="local", handle={"provider": "local", "job_id": str(job.id),
                  "workdir": str(workdir), "pid": None}, rate_usd_per_hour=0.0, gpu_count=0)  # fmt: skip
    transition(ledger, job.id, JobStatus.PROVISIONING)
    transition(ledger, job.id, JobStatus.TRAINING)
    async with app_for(backend).run_test(size=SIZE) as pilot:
        await settle(pilot)
        pilot.app._cancel(str(job.id))
        await settle(pilot)
        toasts = [n.message for n in pilot.app._notifications]
        assert any("had no live engine" in message for message in toasts), toasts
        assert get_job(ledger, job.id).status == "cancelled"
        assert get_job(ledger, job.id).error_message == "cancelled from the dashboard"


async def test_a_followed_jobs_message_reaches_the_screen_once(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app forwards a follower's message to the screen on top, which must not send it back up: the two
    passed every message between them forever, the dashboard's CPU burn after a followed job ended."""
    from tui.messages import JobChanged
    from tui.screens.jobs import JobsScreen

    seen: list[str] = []
    original = JobsScreen.on_job_changed

    def counting(self: JobsScreen, message: JobChanged) -> None:
        seen.append(message.status)
        original(self, message)

    monkeypatch.setattr(JobsScreen, "on_job_changed", counting)
    async with app_for(backend).run_test(size=SIZE) as pilot:
        await settle(pilot)
        pilot.app.post_message(JobChanged(str(job_uuid(3)), "failed", 3))
        await settle(pilot, 1.0)
        assert seen == ["failed"]


def test_a_resume_clears_the_interruption_message(backend: Backend) -> None:
    from remote.supervisor import Supervisor
    from tests.test_notices import ScriptedProvider

    ledger = backend.ledger
    job = create_job(ledger, presets.get("smoke").to_spec(DATASET), name="again")
    transition(ledger, job.id, JobStatus.PROVISIONING)
    transition(ledger, job.id, JobStatus.TRAINING)
    transition(ledger, job.id, JobStatus.INTERRUPTED, error_category="interrupted", error_message="the engine ended")
    Supervisor(ledger, backend.settings, providers={"local": ScriptedProvider([["preprocessing", "hold"]])}).resume(
        job.id
    )
    after = get_job(ledger, job.id)
    assert after.status == "provisioning"
    assert (after.error_message, after.error_category, after.error_hint) == (None, None, None)

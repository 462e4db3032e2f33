"""The dashboard through Textual's Pilot: every screen, the main flows, and its keyboard-first promises."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.widgets import DataTable, Input, Select, TabbedContent

from store.db import Ledger
from store.settings import load_settings
from tests.tui_fixtures import NOW, many_jobs, populate, workers_done
from tui.app import LorapodApp
from tui.backend import Backend
from tui.messages import JobChanged
from tui.screens.compare import CompareScreen
from tui.screens.costs import CostsScreen
from tui.screens.datasets import DatasetsScreen
from tui.screens.help import HelpScreen
from tui.screens.jobs import JobsScreen
from tui.screens.monitor import MonitorScreen
from tui.widgets.job_table import JobTable

SIZE = (120, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def backend(lorapod_home: Path) -> Backend:
    settings = load_settings()
    populate(Ledger(settings.paths.ledger))
    return Backend(settings, clock=lambda: NOW)


def app_for(backend: Backend) -> LorapodApp:
    return LorapodApp(backend, follow=False)


def text_of(widget: Any) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.export_text()


async def settle(pilot: Any, seconds: float = 0.3) -> None:
    await pilot.pause(seconds)
    await workers_done(pilot.app)
    await pilot.pause(0.05)


async def monitor_of(pilot: Any, job: str) -> MonitorScreen:
    """The monitor of ``job`` (an id prefix), opened from the jobs screen once it has settled."""
    await settle(pilot)
    pilot.app.open_job(job)
    await settle(pilot, 0.6)
    screen = pilot.app.screen
    assert isinstance(screen, MonitorScreen)
    return screen


def names(table: JobTable) -> list[str | None]:
    return [table.rows_by_id[str(key.value)].name for key in table.rows]


async def test_jobs_screen_lists_sorts_filters_and_searches(backend: Backend) -> None:
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, JobsScreen)
        table = screen.query_one(JobTable)
        assert names(table)[0] == "lost pod" and len(table.rows) == 6  # newest first
        assert "1–6 of 6" in text_of(screen.query_one("#querybar"))
        summary = text_of(screen.query_one("#summary"))
        assert "2 active" in summary and "$21.55 of $400.00" in summary and "1 alert" in summary

        await pilot.press("s")  # next sort key after created_at: started_at
        await settle(pilot)
        assert screen.query_state.sort == "started_at"
        screen.set_query(sort="cost")
        await settle(pilot)
        assert names(table)[0] == "18-conversation proof"  # $14.83, the most expensive
        await pilot.press("S")
        await settle(pilot)
        assert names(table)[0] == "demo"  # cheapest first

        screen.query_one("#group", Select).value = "failed"
        await settle(pilot)
        assert set(names(table)) == {"big batch", "lost pod"}  # interrupted counts as failed-ish
        screen.query_one("#group", Select).value = "all"
        await settle(pilot)

        await pilot.press("slash")
        await pilot.press(*"aggressive")
        await settle(pilot)
        assert names(table) == ["aggressive, 24 conversations"]


async def test_paging_keeps_ten_thousand_jobs_fast(lorapod_home: Path) -> None:
    settings = load_settings()
    many_jobs(Ledger(settings.paths.ledger), 10_000)
    app = app_for(Backend(settings, clock=lambda: NOW))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        assert len(table.rows) == 50
        assert "1–50 of 10,000" in text_of(app.screen.query_one("#querybar"))
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert "51–100 of 10,000" in text_of(app.screen.query_one("#querybar"))
        assert names(table)[0] == "job 00050"


async def test_overlapping_monitor_refreshes_show_each_event_once(backend: Backend) -> None:
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await monitor_of(pilot, "00000002")
        shown = screen.query_one("#event-log", DataTable).row_count
        # A second refresh that queried before the first one was applied brings the same events again.
        again = backend.detail(screen.job_id, after_seq=0)
        screen._apply(again, backend.clock())
        await pilot.pause(0.05)
        assert screen.query_one("#event-log", DataTable).row_count == shown
        assert len(screen.events) == len({event.seq for event in screen.events})


async def test_monitor_shows_progress_charts_events_and_error_details(backend: Backend) -> None:
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_job("00000002")  # the running job, by prefix
        await settle(pilot, 0.6)
        screen = app.screen
        assert isinstance(screen, MonitorScreen)
        progress = text_of(screen.query_one("#progress-text"))
        assert "Training: 45 / 120 steps (37.5%)" in progress and "epoch 1.12 / 4" in progress
        stats = text_of(screen.query_one("#stats"))
        assert "ETA 42m 00s" in stats and "cost so far $3.21" in stats and "tokens/s" in stats
        assert "● Training" in text_of(screen.query_one("#stepper"))
        assert screen.last_step == 45 and len(screen.metrics) == 45

        await pilot.press("2")
        await settle(pilot)
        log = screen.query_one("#event-log", DataTable)
        assert log.row_count > 0
        assert screen.query_one(TabbedContent).active == "tab-events"
        screen.query_one("#event-filter", Select).value = "checkpoint"
        await settle(pilot)
        assert log.row_count == 2

    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_job("00000003")  # the failed one
        await settle(pilot, 0.6)
        screen = app.screen
        stats = text_of(screen.query_one("#stats"))
        assert "out_of_memory" in stats and "hint: halve batch_size" in stats
        await pilot.press("2")
        screen.query_one("#event-filter", Select).value = "error"
        await settle(pilot)
        log = screen.query_one("#event-log", DataTable)
        log.focus()
        log.move_cursor(row=0)
        await settle(pilot)
        detail = text_of(screen.query_one("#event-detail"))
        assert "Traceback" in detail and "suggested for a retry" in detail


async def test_evaluation_and_details_tabs(backend: Backend) -> None:
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await monitor_of(pilot, "00000001")
        await pilot.press("3")
        await settle(pilot)
        assert screen.query_one(TabbedContent).active == "tab-eval"
        evaluation = text_of(screen.query_one("#evaluation"))
        assert "9.84" in evaluation and "6.12" in evaluation and "anxious_planner" in evaluation
        assert "the most common reaction I see" in evaluation  # the adapter's generation beside the base's
        # The four targets, each with a word beside its colour: 9.84 → 6.12 is 37.8% below the base.
        assert "Targets" in evaluation and "37.8% below the base" in evaluation and "✓ pass" in evaluation
        assert evaluation.count("not measured") == 3
        await pilot.press("4")
        await settle(pilot)
        assert screen.query_one(TabbedContent).active == "tab-details"
        details = text_of(screen.query_one("#details"))
        assert "package deploy" in details and "r 16, alpha 32" in details


async def test_compare_costs_datasets_and_help_screens(backend: Backend) -> None:
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        await pilot.press("space")
        await pilot.press("down", "space")
        await pilot.press("m")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        assert len(app.screen.job_ids) == 2 and len(app.marked) == 2
        await pilot.press("escape")
        await pilot.press("dollar_sign")
        await settle(pilot)
        assert isinstance(app.screen, CostsScreen)
        assert "$21.55" in text_of(app.screen.query_one("#card-spent"))
        await pilot.press("escape", "t")
        await settle(pilot)
        assert isinstance(app.screen, DatasetsScreen)
        assert app.screen.query_one(DataTable).row_count == 1
        await pilot.press("escape", "question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        assert table.selected == app.marked


async def test_costs_screen_saves_the_budget(backend: Backend, lorapod_home: Path) -> None:
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("dollar_sign")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#set-monthly_budget_usd", Input).value = "250"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert load_settings().monthly_budget_usd == 250
        screen.query_one("#set-hard_cap_usd", Input).value = "-3"
        await pilot.press("ctrl+s")
        await settle(pilot)
        problem = text_of(screen.query_one("#budget-problem"))
        assert "Runaway hard cap ($): '-3' must be 0 or more" in problem and "Input should" not in problem
        screen.query_one("#set-hard_cap_usd", Input).value = "abc"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "Runaway hard cap ($): 'abc' is not a number" in text_of(screen.query_one("#budget-problem"))
        screen.query_one("#set-hard_cap_usd", Input).value = "1000"
        screen.query_one("#set-alert_thresholds", Input).value = "0.8, x"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "Alert thresholds: 'x' is not a number" in text_of(screen.query_one("#budget-problem"))
    assert "monthly_budget_usd = 250" in (lorapod_home / "config.toml").read_text()


async def test_the_command_palette_reaches_actions(backend: Backend) -> None:
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"Costs")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, CostsScreen)
        await pilot.press("escape", "ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"Open job 00000005")
        await pilot.pause(0.6)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, MonitorScreen) and app.screen.job_id.startswith("00000005")


async def test_cancel_asks_first_naming_the_cost(backend: Backend) -> None:
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.cancel_job("00000006")  # interrupted: no run, cancels at once after the confirmation
        await pilot.pause(0.3)
        dialog = app.screen
        assert "Cancel job 00000006" in text_of(dialog.query_one(".dialog-title"))
        assert "$2.05 spent so far" in text_of(dialog.query_one(".dialog-detail"))
        await pilot.press("n")
        await settle(pilot)
        assert backend.job("00000006").status == "interrupted"
        app.cancel_job("00000006")
        await pilot.pause(0.3)
        await pilot.press("y")
        await settle(pilot)
        assert backend.job("00000006").status == "cancelled"


async def test_alerts_become_toasts_once(backend: Backend) -> None:
    app = LorapodApp(backend, follow=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.check_alerts()
        await settle(pilot)
        assert any("past 80%" in n.message for n in app._notifications)
        assert backend.take_alerts() == []  # shown once, then marked seen


def test_every_binding_has_an_id_a_description_and_a_tooltip() -> None:
    from textual.binding import Binding

    from tui.dialogs.confirm import ConfirmDialog
    from tui.dialogs.download import DownloadDialog, FolderDialog
    from tui.dialogs.filters import FiltersDialog
    from tui.dialogs.retry import RetryDialog
    from tui.dialogs.wizard import NewJobWizard
    from tui.screens.rate import RateScreen
    from tui.screens.try_ import TryScreen

    owners = [
        LorapodApp, JobsScreen, MonitorScreen, CompareScreen, CostsScreen, DatasetsScreen, HelpScreen, ConfirmDialog,
        DownloadDialog, FolderDialog, FiltersDialog, RetryDialog, NewJobWizard, RateScreen,
        TryScreen,
    ]  # fmt: skip
    for owner in owners:
        for binding in owner.BINDINGS:
            assert isinstance(binding, Binding), owner
            assert binding.id and binding.description and binding.tooltip, (owner.__name__, binding.key)


async def test_usable_at_80_by_24(backend: Backend) -> None:
    app = app_for(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobTable)
        assert len(table.rows) == 6
        assert table.size.height >= 5  # the table keeps room for rows below the filters
        app.open_job("00000002")
        await settle(pilot, 0.6)
        assert "Training: 45 / 120" in text_of(app.screen.query_one("#progress-text"))


def test_a_followers_message_while_the_app_closes_is_dropped(backend: Backend) -> None:
    app = app_for(backend)  # not running: no screen on the stack, as while closing
    app.on_job_changed(JobChanged("00000002", "training", 46))
    app._synced(3)

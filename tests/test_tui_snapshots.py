"""Snapshots of every screen at 120×40 and 80×24, with fixed data (update: pytest --snapshot-update)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from store.db import Ledger
from store.settings import load_settings
from tests.conftest import ROOT
from tests.tui_fixtures import NOW, populate, workers_done
from tui.app import LorapodApp
from tui.backend import Backend

SIZES = [pytest.param((120, 40), id="120x40"), pytest.param((80, 24), id="80x24")]


def _app(monkeypatch: pytest.MonkeyPatch, *, no_color: bool = False) -> LorapodApp:
    # Dialogs offer folders under the working directory, and the wizard opens the sample by a relative path:
    # a fixed directory holding a copy of the sample makes the pictures the same from any checkout.
    where = Path("/tmp/lorapod-snapshots")
    shutil.copytree(ROOT / "samples", where / "samples", dirs_exist_ok=True)
    monkeypatch.chdir(where)
    settings = load_settings()
    populate(Ledger(settings.paths.ledger))
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")  # read (and removed) by the app as it is made
    return LorapodApp(Backend(settings, clock=lambda: NOW), follow=False)


@pytest.fixture
def app(lorapod_home: Path, monkeypatch: pytest.MonkeyPatch) -> LorapodApp:
    return _app(monkeypatch)


@pytest.fixture
def no_color_app(lorapod_home: Path, monkeypatch: pytest.MonkeyPatch) -> LorapodApp:
    return _app(monkeypatch, no_color=True)


async def _settle(pilot: Any) -> None:
    await pilot.pause(0.3)
    await workers_done(pilot.app)
    await pilot.pause(0.2)
    _steady_cursors(pilot)


def _steady_cursors(pilot: Any) -> None:
    """A blinking cursor would make the picture depend on the moment it is taken."""
    from textual.widgets import Input

    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False


def _open(job: str, *keys: str) -> Any:
    async def run(pilot: Any) -> None:
        await _settle(pilot)
        pilot.app.open_job(job)
        await _settle(pilot)
        for key in keys:
            await pilot.press(key)
            await _settle(pilot)

    return run


def _keys(*keys: str) -> Any:
    async def run(pilot: Any) -> None:
        await _settle(pilot)
        for key in keys:
            await pilot.press(key)
            await _settle(pilot)

    return run


def _call(method: str, *args: Any) -> Any:
    async def run(pilot: Any) -> None:
        await _settle(pilot)
        getattr(pilot.app, method)(*args)
        await _settle(pilot)

    return run


def _wizard(*keys: str) -> Any:
    """The wizard on the sample. Its directory tree keeps a loader worker alive, so this waits on what the
    screen shows rather than on every worker."""

    async def run(pilot: Any) -> None:
        from tui.dialogs.wizard import NewJobWizard

        await _settle(pilot)
        wizard = NewJobWizard(Path("samples/brightrun-sample.json"), root=Path("samples"))
        pilot.app.push_screen(wizard)
        await _until(pilot, lambda: wizard.inspection is not None)
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.3)
        if keys and len(keys) == 3:
            await _until(pilot, lambda: wizard.query_one("#review-text").content != "")
        _steady_cursors(pilot)
        await pilot.pause(0.3)

    return run


async def _until(pilot: Any, condition: Any, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        await pilot.pause(0.1)
    raise TimeoutError("the screen never got there")


def _retry(job: str) -> Any:
    """The retry dialog once its diff is in: the dialog is pushed by one worker and fills its table in another."""

    async def run(pilot: Any) -> None:
        from tui.dialogs.retry import RetryDialog
        from tui.widgets.table import Table

        await _settle(pilot)
        pilot.app.retry_job(job)
        await _until(
            pilot,
            lambda: isinstance(pilot.app.screen, RetryDialog) and pilot.app.screen.query_one(Table).row_count > 0,
        )
        await _settle(pilot)

    return run


def _dialog(method: str, job: str, dialog: str) -> Any:
    """A dialog an action opens once a worker has read the job: waited for by its type, then settled."""

    async def run(pilot: Any) -> None:
        import importlib

        module, _, name = dialog.rpartition(".")
        kind = getattr(importlib.import_module(module), name)
        await _settle(pilot)
        getattr(pilot.app, method)(job)
        await _until(pilot, lambda: isinstance(pilot.app.screen, kind))
        await _settle(pilot)

    return run


SCREENS = {
    "jobs": _keys(),
    "jobs-marked": _keys("space", "down", "space"),
    "monitor-charts": _open("00000002"),
    "monitor-events": _open("00000003", "2"),
    "monitor-evaluation": _open("00000001", "3"),
    "monitor-details": _open("00000001", "4"),
    "compare": _call("open_compare", ["00000001-0000-4000-8000-000000000001", "00000002-0000-4000-8000-000000000002"]),
    "costs": _keys("dollar_sign"),
    "datasets": _keys("t"),
    "help": _keys("question_mark"),
    "wizard-dataset": _wizard(),
    "wizard-preset": _wizard("ctrl+n"),
    "wizard-resources": _wizard("ctrl+n", "ctrl+n"),
    "wizard-review": _wizard("ctrl+n", "ctrl+n", "ctrl+n"),
    "cancel-confirm": _dialog("cancel_job", "00000002", "tui.dialogs.confirm.ConfirmDialog"),
    "retry": _retry("00000003"),
    "download": _dialog("download", "00000001", "tui.dialogs.download.DownloadDialog"),
    "filters": _keys("f"),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(snap_compare: Any, app: LorapodApp, screen: str, size: tuple[int, int]) -> None:
    assert snap_compare(app, terminal_size=size, run_before=SCREENS[screen])


# The charts again without colour: every series must still be told apart (by its marker and the legend).
CHARTS = ["monitor-charts", "compare"]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", CHARTS)
def test_charts_without_colour(snap_compare: Any, no_color_app: LorapodApp, screen: str, size: tuple[int, int]) -> None:
    assert no_color_app.no_color
    assert snap_compare(no_color_app, terminal_size=size, run_before=SCREENS[screen])

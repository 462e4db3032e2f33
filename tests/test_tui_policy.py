"""The dashboard's promises about itself: a failed worker never closes it, no ledger read on the UI thread,
Resume offered only where a job can resume, and registered files whose bytes changed flagged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from textual.widgets import DataTable

from engine.checksums import sha256_file
from store.files import register_validated
from tests.test_tui import app_for, backend, monitor_of, settle
from tests.tui_fixtures import job_uuid
from tui.backend import Backend
from tui.screens.datasets import DatasetsScreen
from tui.screens.monitor import MonitorScreen

SIZE = (120, 40)
pytestmark = pytest.mark.anyio
__all__ = ["backend"]  # the populated ledger's backend (a fixture)


def toasts(app: Any) -> list[tuple[str, str]]:
    return [(n.title, n.message) for n in app._notifications]


def footer_keys(screen: Any) -> set[str]:
    """The keys the footer shows for ``screen`` (bindings whose check_action says no are left out)."""
    return {key for key, active in screen.active_bindings.items() if active.binding.show}


async def test_a_worker_raising_a_lorapod_error_is_a_toast_with_its_code_and_the_app_stays_open(
    backend: Backend, tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "exports"
    not_a_folder.write_text("a file where the folder should be")
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app._export([job_uuid(1)], not_a_folder)
        await settle(pilot)
        ((title, message),) = [t for t in toasts(pilot.app) if t[0].startswith("Export")]
        assert title == "Export refused (StoreError)"
        assert str(not_a_folder) in message
        assert pilot.app.is_running and pilot.app.return_code is None
        await pilot.press("t")  # and it still answers keys
        await settle(pilot)
        assert isinstance(pilot.app.screen, DatasetsScreen)


async def test_any_other_error_in_a_worker_is_logged_with_its_traceback_and_the_app_stays_open(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(job_id: Any, path: Path) -> int:
        raise RuntimeError("a bug in the export")

    monkeypatch.setattr(backend, "export_metrics", broken)
    app = app_for(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        with caplog.at_level(logging.ERROR, logger="lorapod.dashboard"):
            app._export([job_uuid(1)], tmp_path)
            await settle(pilot)
        (record,) = [r for r in caplog.records if r.name == "lorapod.dashboard"]
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
        assert "broken" in caplog.text  # the traceback, down to the function that raised
        (toast,) = [t for t in toasts(pilot.app) if t[0].startswith("Export")]
        assert "RuntimeError: a bug in the export" in toast[1] and "dashboard.log" in toast[1]
        assert pilot.app.is_running and pilot.app.return_code is None


@pytest.fixture
def sql_threads() -> Iterator[list[str]]:
    """The name of the thread behind every SQL statement any engine runs while the test does."""
    seen: list[str] = []

    def record(*_args: Any) -> None:
        seen.append(threading.current_thread().name)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


async def test_no_screen_reads_the_ledger_on_the_ui_thread(backend: Backend, sql_threads: list[str]) -> None:
    ui = threading.main_thread().name
    async with app_for(backend).run_test(size=SIZE) as pilot:
        await settle(pilot)
        for keys in (["t"], ["dollar_sign"], ["question_mark"]):
            await pilot.press(*keys)
            await settle(pilot)
            await pilot.press("escape")
            await settle(pilot)
        await pilot.press("f")  # the filters dialog lists models and files
        await settle(pilot)
        await pilot.press("escape")
        await monitor_of(pilot, "00000002")  # a live job: cancel asks first
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("escape")
        await monitor_of(pilot, "00000003")  # a failed job: retry and download
        for key in ("r", "d"):
            await pilot.press(key)
            await settle(pilot)
            await pilot.press("escape")
            await settle(pilot)
        await pilot.press("space")
        await settle(pilot)
        assert sql_threads, "the screens read nothing: the check would pass vacuously"
        assert ui not in sql_threads


async def test_resume_is_in_the_monitors_footer_only_for_an_interrupted_job(backend: Backend) -> None:
    async with app_for(backend).run_test(size=SIZE) as pilot:
        for job, offered in (("00000006", True), ("00000002", False), ("00000003", False), ("00000001", False)):
            screen = await monitor_of(pilot, job)
            assert isinstance(screen, MonitorScreen)
            assert ("R" in footer_keys(screen)) is offered, job
            await pilot.press("escape")
            await settle(pilot)


async def test_the_datasets_screen_flags_a_file_whose_contents_changed(backend: Backend, tmp_path: Path) -> None:
    kept, edited = tmp_path / "kept.json", tmp_path / "edited.json"
    for path in (kept, edited):
        path.write_text('{"a": 1}')
        register_validated(backend.ledger, path, sha256=sha256_file(path), size_bytes=8, report={"format": "x"})
    edited.write_text('{"a": 1, "b": 2}')
    async with app_for(backend).run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("t")
        await settle(pilot)
        table = pilot.app.screen.query_one(DataTable)
        contents = {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        assert contents == {
            "kept.json": "✔ unchanged",
            "edited.json": "⚠ changed since registered",
            "brightrun-v4-18-conversations.json": "✖ missing",  # the fixture's path is not on this machine
        }


def test_every_error_the_store_and_remote_raise_on_purpose_derives_from_lorapod_error() -> None:
    import importlib
    import inspect

    from engine import LorapodError

    modules = [
        "store.errors", "remote.provider", "remote.supervisor", "remote.runpod.errors", "remote.runpod.client",
        "remote.notice_channels",
    ]  # fmt: skip
    errors = [
        cls
        for name in modules
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == name and not cls.__name__.startswith("_")
    ]
    assert len(errors) > 20
    assert [cls.__name__ for cls in errors if not issubclass(cls, LorapodError)] == []

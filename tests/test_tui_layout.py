"""Layout and keys: a jobs table that fits any width, a footer that keeps Help and Quit, pager keys in tables,
Esc to clear the search, Enter to download, event details as written, and toasts that keep the error code."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input
from textual.widgets._footer import FooterKey

import presets
from store.db import Ledger
from store.ingest import ingest
from store.jobs import create_job, get_job, transition
from store.settings import load_settings
from store.status import JobStatus
from tests.test_tui import monitor_of, settle, text_of
from tests.tui_fixtures import DATASET, NOW, job_uuid, populate
from tui.app import LorapodApp
from tui.backend import Backend
from tui.dialogs.download import DownloadDialog
from tui.following import ended_why
from tui.messages import JobFinished
from tui.widgets.job_table import JobTable
from tui.widgets.keyed import NavTable
from tui.widgets.table import Table

pytestmark = pytest.mark.anyio


@pytest.fixture
def backend(lorapod_home: Path) -> Backend:
    settings = load_settings()
    ledger = Ledger(settings.paths.ledger)
    populate(ledger)
    job = create_job(ledger, presets.get("smoke").to_spec(DATASET), name="a long name for a job that is starting")
    transition(ledger, job.id, JobStatus.PROVISIONING)
    job = create_job(ledger, presets.get("smoke").to_spec(DATASET), name="checking its data")
    transition(ledger, job.id, JobStatus.PREPROCESSING)
    return Backend(settings, clock=lambda: NOW)


def app_for(backend: Backend) -> LorapodApp:
    return LorapodApp(backend, follow=False)


def table_lines(table: JobTable) -> list[str]:
    return [line.text for line in (table.render_line(y) for y in range(table.size.height))]


@pytest.mark.parametrize(
    ("size", "headers"),
    [
        ((80, 24), ["Job", "Name", "Status", "Progress", "Duration", "Cost"]),
        ((100, 30), ["Job", "Name", "Status", "Progress", "Duration", "Cost", "Started"]),
        ((120, 40), ["Job", "Name", "Model", "Status", "Progress", "Duration", "Cost", "Started"]),
        ((180, 40), ["Job", "Name", "Training file", "Model", "Status", "Progress", "Duration", "Cost", "Started"]),
    ],
)
async def test_the_jobs_table_fits_the_width(backend: Backend, size: Any, headers: list[str]) -> None:
    async with app_for(backend).run_test(size=size) as pilot:
        await settle(pilot)
        table = pilot.app.screen.query_one(JobTable)
        assert [str(column.label) for column in table.columns.values()] == headers
        shown = "\n".join(table_lines(table))
        for status in ("◑ preprocessing", "◔ provisioning", "⚠ interrupted", "✔ completed"):
            assert status in shown  # never cut
        assert "Duration" in shown and "$14.83" in shown
        lost = next(line for line in table_lines(table) if "lost pod" in line)
        assert "6m 40s" in lost  # an interrupted job's clock stopped with its process
        widths = sum(column.get_render_width(table) for column in table.columns.values())
        assert widths <= size[0]
        name = table.columns["Name"].width  # type: ignore[index]
        assert name >= 12 and (size[0] < 120 or name > 20)


@pytest.mark.parametrize("width", [80, 120])
async def test_the_footer_keeps_help_and_quit(backend: Backend, width: int) -> None:
    async with app_for(backend).run_test(size=(width, 24)) as pilot:
        await settle(pilot)
        for screen_key in ("", "dollar_sign", "t"):
            if screen_key:
                await pilot.press(screen_key)
                await settle(pilot)
            keys = {key.key: key for key in pilot.app.screen.query(FooterKey)}
            for key in ("question_mark", "q"):
                region = keys[key].region
                assert region.width and region.right <= width, (screen_key, key)


async def test_tables_move_with_pager_keys(backend: Backend) -> None:
    async with app_for(backend).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = pilot.app.screen.query_one(JobTable)
        assert table.cursor_row == 0
        for key, row in (("j", 1), ("j", 2), ("k", 1), ("G", 7), ("g", 0), ("end", 7), ("home", 0)):
            await pilot.press(key)
            assert table.cursor_row == row, key
        screen = await monitor_of(pilot, "00000002")
        await pilot.press("2")
        await settle(pilot)
        log = screen.query_one("#event-log")
        await pilot.press("g")
        assert log.cursor_row == 0  # type: ignore[attr-defined]
        await pilot.press("G")
        assert log.cursor_row == log.row_count - 1  # type: ignore[attr-defined]


async def test_escape_clears_the_search(backend: Backend) -> None:
    async with app_for(backend).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash", "l", "o", "s", "t")
        await settle(pilot)
        table = pilot.app.screen.query_one(JobTable)
        assert len(table.rows) == 1
        await pilot.press("escape")
        await settle(pilot)
        assert pilot.app.screen.query_one("#search", Input).value == ""
        assert len(table.rows) == 8 and table.has_focus


async def test_enter_submits_the_download_dialog(backend: Backend, tmp_path: Path) -> None:
    chosen: list[Any] = []
    async with app_for(backend).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        pilot.app.push_screen(DownloadDialog("job 00000001", ["adapter", "full", "deploy"], tmp_path), chosen.append)
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert chosen and chosen[0] is not None and chosen[0][1] == tmp_path
        chosen.clear()
        pilot.app.push_screen(DownloadDialog("job 00000001", ["adapter", "full", "deploy"], tmp_path), chosen.append)
        await settle(pilot)
        pilot.app.screen.query_one("#cancel").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert chosen == [None]  # Enter on Cancel cancels


async def test_event_details_show_text_as_written(backend: Backend) -> None:
    job = get_job(backend.ledger, job_uuid(2))
    payload = {"type": "log", "message": "réponse « naïve » ✓ 日本語"}
    ingest(
        backend.ledger,
        job.id,
        [{"seq": job.last_event_seq + 1, "ts": (NOW + timedelta(hours=1)).isoformat(), **payload}],
    )
    async with app_for(backend).run_test(size=(160, 50)) as pilot:
        screen = await monitor_of(pilot, "00000002")
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("G")
        await settle(pilot)
        detail = text_of(screen.query_one("#event-detail"))
        assert "réponse « naïve » ✓ 日本語" in detail and "\\u" not in detail


async def test_a_failed_jobs_toast_keeps_its_error_code(backend: Backend) -> None:
    job = get_job(backend.ledger, job_uuid(3))
    assert ended_why(job) == "out_of_memory: CUDA out of memory. Tried to allocate 8.00 GiB"
    async with app_for(backend).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        pilot.app.post_message(JobFinished(str(job.id), "failed", "job 00000003", ended_why(job)))
        await settle(pilot)
        (toast,) = [n for n in pilot.app._notifications if n.title == "Job finished"]
        assert "out_of_memory" in toast.message and toast.severity == "error"


@pytest.mark.parametrize("kind", [Table, NavTable])
async def test_a_tables_header_lines_up_with_rows_drawn_after_it(kind: type[Table]) -> None:
    """A header drawn between a row's arrival and the table measuring it once kept its old widths."""
    from textual.app import App, ComposeResult

    class One(App[None]):
        CSS = "Table { height: 6; }"  # a fixed height: the new row does not resize the table

        def compose(self) -> ComposeResult:
            yield kind()

    app = One()
    async with app.run_test(size=(80, 10)) as pilot:
        table = app.query_one(kind)
        table.add_columns("field", "before", "retry")
        await pilot.pause()
        table.add_row("gradient_accumulation_steps", "4", "8")
        table.render_line(0)  # the screen paints before the table is next idle
        await pilot.pause()
        header, row = table.render_line(0).text, table.render_line(1).text
        assert header.index("before") == row.index("4")
        assert header.index("retry") == row.index("8")


async def test_the_supervisor_starts_once_the_first_page_is_on_screen(backend: Backend) -> None:
    """`lorapod` starts the background supervisor after its first paint, so the two do not share the CPU."""
    rows_then: list[int] = []
    app = LorapodApp(
        backend, follow=False, after_first_page=lambda: rows_then.append(app.screen.query_one(JobTable).row_count)
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert len(rows_then) == 1 and rows_then[0] > 0  # once, with the jobs already shown
        app.screen.refresh_all()  # type: ignore[attr-defined]
        await settle(pilot)
        assert len(rows_then) == 1


async def test_the_supervisor_starts_even_when_no_page_can_be_read(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tui.app

    def unreadable(*_: Any) -> Any:
        raise OSError("disk I/O error")

    monkeypatch.setattr(backend, "jobs", unreadable)
    monkeypatch.setattr(tui.app, "FIRST_PAGE_WAIT_S", 0.2)
    started: list[bool] = []
    app = LorapodApp(backend, follow=False, after_first_page=lambda: started.append(True))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.6)
        assert started == [True]


def test_settling_the_memory_sets_what_is_built_aside_from_the_collector() -> None:
    import gc

    from tui.app import settle_memory

    try:
        settle_memory()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()

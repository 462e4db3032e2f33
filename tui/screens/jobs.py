"""The jobs screen (home): every job, a page at a time, filtered, sorted and searchable, with a summary bar."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Select, Static

from store.jobs import SORT_KEYS, JobPage, JobQuery
from tui.errors import ReportsWorkerErrors
from tui.messages import JobChanged, LedgerSynced
from tui.widgets.job_table import COLUMNS, JobTable
from tui.widgets.keyed import Footer

if TYPE_CHECKING:
    from tui.app import LorapodApp
    from tui.backend import Summary, SyncState

PAGE = 50  # the screen shows about 30 rows; a smaller page keeps sorting 10,000 jobs under 100 ms
GROUPS = [
    ("All", "all"),
    ("Active", "active"),
    ("Completed", "completed"),
    ("Failed", "failed"),
    ("Cancelled", "cancelled"),
    ("Interrupted", "interrupted"),
]
SORT_LABELS = {key: header for header, key in COLUMNS if key} | {"created_at": "Created"}


class JobsScreen(ReportsWorkerErrors, Screen[None]):
    """Home: the job table."""

    BINDINGS = [
        Binding("enter", "open", "Open", id="jobs.open", tooltip="Open the job under the cursor in the monitor"),
        Binding("space", "select", "Select", id="jobs.select", tooltip="Mark the job for compare or export"),
        Binding("m", "compare", "Compare", id="jobs.compare", tooltip="Compare the marked jobs (two or more)"),
        Binding("x", "export", "Export", show=False, id="jobs.export", tooltip="Export the metrics of the marked jobs"),
        Binding(
            "o",
            "report",
            "Report",
            show=False,
            id="jobs.report",
            tooltip="Write a client report (HTML) of the marked jobs, or the one under the cursor",
        ),
        Binding("c", "cancel_job", "Cancel", id="jobs.cancel", tooltip="Cancel the job under the cursor"),
        Binding("r", "retry", "Retry", id="jobs.retry", tooltip="Retry the job under the cursor"),
        Binding("p", "try_job", "Try", id="jobs.try", tooltip="Try the adapter: one prompt to base and adapter"),
        Binding(
            "v", "rate", "Rate", show=False, id="jobs.rate", tooltip="Rate the replies of the job under the cursor"
        ),
        Binding(
            "R", "resume", "Resume", show=False, id="jobs.resume", tooltip="Resume the interrupted job under the cursor"
        ),
        Binding("s", "sort", "Sort", show=False, id="jobs.sort", tooltip="Sort by the next column"),
        Binding("S", "reverse", "Reverse", show=False, id="jobs.reverse", tooltip="Reverse the sort order"),
        Binding("f", "filters", "Filters", id="jobs.filters", tooltip="Filter by dates, training file or model"),
        Binding("slash", "search", "Search", id="jobs.search", tooltip="Search names, models, presets and ids"),
        Binding("escape", "clear_search", "Clear search", show=False, id="jobs.clear", tooltip="Clear the search"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False, id="jobs.next", tooltip="Next page"),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False, id="jobs.prev", tooltip="Previous page"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.query_state = JobQuery(limit=PAGE)
        self.total = 0
        self._reload_pending = False

    @property
    def lorapod(self) -> LorapodApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static(id="summary")
        with Horizontal(id="filterbar"):
            yield Input(placeholder="search: name, model, preset or id", id="search")
            yield Select(GROUPS, value="all", allow_blank=False, id="group")
        yield Static(id="querybar")
        yield JobTable(id="jobs")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(JobTable)
        table.selected = self.lorapod.marked
        table.focus()
        self.refresh_all()
        self.set_interval(5.0, self.refresh_all)

    # --- loading --------------------------------------------------------------------------------------

    def refresh_all(self) -> None:
        """The page and the summary bar (on a timer, and when a followed job moves)."""
        self.reload()
        self.reload_summary()

    @work(thread=True, exclusive=True, group="jobs-load", exit_on_error=False)
    def reload(self) -> None:
        """The current page only: what sorting, filtering, searching and paging change."""
        backend = self.lorapod.backend
        page = backend.jobs(self.query_state)
        self.app.call_from_thread(self._show, page, backend.clock())

    @work(thread=True, exclusive=True, group="jobs-summary", exit_on_error=False)
    def reload_summary(self) -> None:
        summary = self.lorapod.backend.summary()
        self.app.call_from_thread(self._show_summary, summary)

    def _show(self, page: JobPage, now: datetime) -> None:
        if not self.is_mounted:  # a late answer for a screen already closed
            return
        self._reload_pending = False
        self.total = page.total
        self.query_one(JobTable).show(page.jobs, now)
        self._show_query()
        self.lorapod.first_page_shown()

    def _show_summary(self, summary: Summary) -> None:
        if not self.is_mounted:
            return
        month = summary.month
        share = month.spent / summary.budget if summary.budget else 0.0
        text = Text()
        text.append(f"● {summary.active} active", style="bold")
        text.append("  ·  ")
        style = "bold red" if share >= 0.95 else "bold yellow" if share >= 0.8 else "bold"
        text.append(f"${month.spent:,.2f} of ${summary.budget:,.2f} this month ({share:.0%})", style=style)
        if month.active_cost:
            text.append(f"  ·  ${month.active_cost:,.2f} running")
        alerts = len(summary.alerts) + len(summary.month_alerts)
        if alerts:
            text.append("  ·  ")
            text.append(f"⚠ {alerts} alert{'s' * (alerts != 1)}", style="bold yellow")
        if summary.sync is not None:
            text.append("  ·  ")
            text.append_text(_sync_text(summary.sync, self.lorapod.backend.clock()))
        self.query_one("#summary", Static).update(text)

    def _show_query(self) -> None:
        q = self.query_state
        first = q.offset + 1 if self.total else 0
        last = min(q.offset + (q.limit or self.total), self.total)
        parts = [
            f"{first}–{last} of {self.total:,}",
            f"sorted by {SORT_LABELS.get(q.sort, q.sort)} {'↓' if q.descending else '↑'}",
        ]
        if q.base_model:
            parts.append(f"model {q.base_model.rsplit('/', 1)[-1]}")
        if q.training_file_id:
            parts.append("one training file")
        if q.created_from or q.created_to:
            start = q.created_from.strftime("%Y-%m-%d") if q.created_from else "…"
            end = q.created_to.strftime("%Y-%m-%d") if q.created_to else "…"
            parts.append(f"created {start} → {end}")
        selected = len(self.query_one(JobTable).selected)
        if selected:
            parts.append(f"{selected} marked")
        self.query_one("#querybar", Static).update(Text("  ·  ".join(parts), style="dim"))

    def set_query(self, **changes: Any) -> None:
        self.query_state = replace(self.query_state, **changes)
        self.reload()

    def on_ledger_synced(self, message: LedgerSynced) -> None:
        if message.received:
            self.refresh_all()
        else:
            self.reload_summary()

    def on_job_changed(self, message: JobChanged) -> None:
        if not self._reload_pending:
            self._reload_pending = True
            self.set_timer(0.3, self.refresh_all)

    # --- filters --------------------------------------------------------------------------------------

    @on(Input.Changed, "#search")
    def _search(self, event: Input.Changed) -> None:
        self.set_query(search=event.value or None, offset=0)

    @on(Input.Submitted, "#search")
    def _search_done(self) -> None:
        self.query_one(JobTable).focus()

    @on(Select.Changed, "#group")
    def _group(self, event: Select.Changed) -> None:
        self.set_query(group=str(event.value), offset=0)

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = dict(COLUMNS).get(str(event.label))
        if key:
            descending = not self.query_state.descending if key == self.query_state.sort else True
            self.set_query(sort=key, descending=descending, offset=0)

    def action_sort(self) -> None:
        keys = list(SORT_KEYS)
        index = keys.index(self.query_state.sort) if self.query_state.sort in keys else -1
        self.set_query(sort=keys[(index + 1) % len(keys)], offset=0)

    def action_reverse(self) -> None:
        self.set_query(descending=not self.query_state.descending, offset=0)

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_clear_search(self) -> None:
        search = self.query_one("#search", Input)
        if search.value:
            search.value = ""  # Input.Changed reloads the page
        self.query_one(JobTable).focus()

    def action_page(self, direction: int) -> None:
        offset = self.query_state.offset + direction * PAGE
        if 0 <= offset < max(self.total, 1):
            self.set_query(offset=offset)

    def action_filters(self) -> None:
        from tui.dialogs.filters import FiltersDialog

        def apply(result: dict[str, Any] | None) -> None:
            if result is not None:
                self.set_query(offset=0, **result)

        self.app.push_screen(FiltersDialog(self.query_state), apply)

    # --- actions --------------------------------------------------------------------------------------

    def _current(self) -> str | None:
        job_id = self.query_one(JobTable).current_id()
        if job_id is None:
            self.notify("No job under the cursor", severity="warning")
        return job_id

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        job_id = self._current()
        if job_id:
            self.lorapod.open_job(job_id)

    def action_rate(self) -> None:
        job_id = self._current()
        if job_id:
            self.lorapod.open_rate(job_id)

    def action_select(self) -> None:
        self.query_one(JobTable).toggle_selected()
        self._show_query()

    def _marked(self) -> list[str]:
        table = self.query_one(JobTable)
        return sorted(table.selected) or ([table.current_id()] if table.current_id() else [])  # type: ignore[list-item]

    def action_compare(self) -> None:
        marked = sorted(self.query_one(JobTable).selected)
        if len(marked) < 2:
            self.notify("Mark two or more jobs with space to compare them", severity="warning")
            return
        self.lorapod.open_compare(marked)

    def action_export(self) -> None:
        marked = self._marked()
        if marked:
            self.lorapod.export_metrics([uuid.UUID(j) for j in marked])

    def action_report(self) -> None:
        marked = self._marked()
        if marked:
            self.lorapod.write_report(marked)

    def action_cancel_job(self) -> None:
        job_id = self._current()
        if job_id:
            self.lorapod.cancel_job(job_id)

    def action_retry(self) -> None:
        job_id = self._current()
        if job_id:
            self.lorapod.retry_job(job_id)

    def action_try_job(self) -> None:
        job_id = self._current()
        if job_id:
            self.lorapod.try_job(job_id)

    def action_resume(self) -> None:
        job_id = self._current()
        if job_id:
            self.lorapod.resume_job(job_id)


def _sync_text(state: SyncState, now: datetime) -> Text:
    if state.problem is not None:
        return Text("⇅ sync offline, retrying", style="bold yellow")
    if state.last_synced is None:
        return Text("⇅ syncing…", style="dim")
    minutes = int((now - state.last_synced).total_seconds() // 60)
    return Text(f"⇅ synced {'just now' if minutes < 1 else f'{minutes} min ago'}", style="dim")

"""The job monitor: stage stepper, progress, ETA, cost, charts, the event log, evaluation and details.

It reads the ledger (kept current by the app's followers) twice a second, fetching only what is new: events
after the last seq shown and metrics after the last step plotted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, ProgressBar, Select, Static, TabbedContent, TabPane

from engine.events import StageEvent
from store.events import typed_event
from store.models import JobEvent, TrainingMetric
from store.status import TERMINAL, JobStatus
from tui.backend import JobDetail
from tui.cli.common import job_title
from tui.errors import ReportsWorkerErrors
from tui.messages import JobChanged
from tui.status import look
from tui.widgets.chart_grid import ChartGrid
from tui.widgets.job_views import (
    EVENT_FILTERS,
    details_view,
    evaluation_view,
    event_detail,
    event_summary,
    stats_text,
)
from tui.widgets.keyed import Footer, NavTable
from tui.widgets.stepper import StageStepper

if TYPE_CHECKING:
    from tui.app import LorapodApp


class MonitorScreen(ReportsWorkerErrors, Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="monitor.back", tooltip="Back to the previous screen"),
        Binding("c", "cancel_job", "Cancel", id="monitor.cancel", tooltip="Cancel this job (it checkpoints first)"),
        Binding("r", "retry", "Retry", id="monitor.retry", tooltip="Retry: same config or the suggested one"),
        Binding("R", "resume", "Resume", id="monitor.resume", tooltip="Resume an interrupted job from its checkpoint"),
        Binding("p", "try_job", "Try", id="monitor.try", tooltip="Try the adapter: one prompt to base and adapter"),
        Binding("d", "download", "Download", id="monitor.download", tooltip="Download a package, checksums verified"),
        Binding("y", "copy_path", "Copy path", id="monitor.copy", tooltip="Copy the adapter's storage path"),
        Binding(
            "o", "report", "Report", show=False, id="monitor.report", tooltip="Write this job's client report (HTML)"
        ),
        Binding("e", "export", "Export", id="monitor.export", tooltip="Export the metrics history as CSV"),
        Binding("m", "compare", "Compare", id="monitor.compare", tooltip="Mark for compare; compare the marked jobs"),
        Binding(
            "v", "rate", "Rate", show=False, id="monitor.rate", tooltip="Rate this job's replies blind, base vs adapter"
        ),
        Binding("z", "maximise", "Maximise", id="monitor.maximise", tooltip="Charts: one alone, the next, then all"),
        Binding(
            "w", "window", "Window", show=False, id="monitor.window", tooltip="Charts: all steps, last 1000, 200, 50"
        ),
        Binding("s", "smooth", "Smooth", show=False, id="monitor.smooth", tooltip="Charts: EMA smoothing on or off"),
        Binding("l", "log_scale", "Log scale", show=False, id="monitor.log", tooltip="Charts: log scale on or off"),
        Binding(
            "1", "tab('tab-charts')", "Charts", show=False, priority=True, id="monitor.charts", tooltip="The charts"
        ),
        Binding(
            "2", "tab('tab-events')", "Events", show=False, priority=True, id="monitor.events", tooltip="The event log"
        ),
        Binding(
            "3",
            "tab('tab-eval')",
            "Evaluation",
            show=False,
            priority=True,
            id="monitor.eval",
            tooltip="Base vs adapter",
        ),
        Binding(
            "4",
            "tab('tab-details')",
            "Details",
            show=False,
            priority=True,
            id="monitor.details",
            tooltip="Spec and packages",
        ),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.last_seq = 0
        self.last_step: int | None = None
        self.metrics: list[TrainingMetric] = []
        self.events: list[JobEvent] = []
        self.stages_seen: set[str] = set()
        self.detail: JobDetail | None = None
        self.filter = "-heartbeat"
        self.detail_status: str | None = None
        self._loading = False

    @property
    def lorapod(self) -> LorapodApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="job-title")
        yield StageStepper(id="stepper")
        yield Static(id="progress-text")
        yield ProgressBar(total=100, show_eta=False, id="progress")
        yield Static(id="stats")
        with TabbedContent(id="tabs"):
            with TabPane("1 Charts", id="tab-charts"):
                yield ChartGrid(id="charts")
            with TabPane("2 Events", id="tab-events"):
                yield Select(EVENT_FILTERS, value="-heartbeat", allow_blank=False, id="event-filter")
                with Horizontal(id="event-panes"):
                    yield NavTable(id="event-log", cursor_type="row")
                    with VerticalScroll(id="event-detail-scroll"):
                        yield Static(id="event-detail")
            with TabPane("3 Evaluation", id="tab-eval"), VerticalScroll():
                yield Static(id="evaluation")
            with TabPane("4 Details", id="tab-details"), VerticalScroll():
                yield Static(id="details")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#event-log", DataTable).add_columns("seq", "time", "type", "what")
        self.refresh_data()
        self.ticker = self.set_interval(0.5, self.refresh_data)

    def on_job_changed(self, message: JobChanged) -> None:
        if message.job_id == self.job_id:
            self.refresh_data()

    # --- data -----------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="monitor", exit_on_error=False)
    def refresh_data(self) -> None:
        # The newest step is read again: its eval loss is merged into its row after its training loss.
        after_step = self.last_step - 1 if self.last_step is not None else None
        detail = self.lorapod.backend.detail(self.job_id, after_seq=self.last_seq, after_step=after_step)
        self.app.call_from_thread(self._apply, detail, self.lorapod.backend.clock())

    def _apply(self, detail: JobDetail, now: Any) -> None:
        if not self.is_mounted or not self.query("#job-title"):  # a late answer, or a screen not built yet
            return
        self.detail = detail
        job = detail.job
        self.job_id = str(job.id)  # opened by a prefix, followers' messages name the full id
        # Two refreshes can overlap (a worker already past its query is not cancelled): keep only what is new.
        fresh = [event for event in detail.events if event.seq > self.last_seq]
        if fresh:
            self.last_seq = fresh[-1].seq
            self.events.extend(fresh)
            self.stages_seen.update(e.stage.value for e in map(typed_event, fresh) if isinstance(e, StageEvent))
            self._append_events(fresh)
        if detail.metrics:
            known = {m.step: i for i, m in enumerate(self.metrics)}
            for metric in detail.metrics:
                if metric.step in known:
                    self.metrics[known[metric.step]] = metric
                else:
                    self.metrics.append(metric)
            self.last_step = max(m.step for m in self.metrics)
            self._plot()
        if self.detail_status != job.status:  # Resume is offered only while the job is interrupted
            self.detail_status = job.status
            self.refresh_bindings()
        self.query_one("#job-title", Static).update(Text(job_title(job), style="bold"))
        self.query_one(StageStepper).show(job.status, job.stage, self.stages_seen)
        # An ended job changes only when someone acts on it (a resume), and that arrives as a JobChanged.
        if job.status in TERMINAL or job.status == "interrupted":
            self.ticker.pause()
        else:
            self.ticker.resume()
        self._progress(detail, now)
        self._evaluation(detail)
        self._details(detail)

    def _progress(self, detail: JobDetail, now: Any) -> None:
        job = detail.job
        item = look(job.status)
        ended = job.status in TERMINAL or job.status == "interrupted"
        epochs = detail.spec.hyperparameters.num_epochs if detail.spec else None
        stage = (job.stage or job.status).replace("_", " ").capitalize()
        bar = self.query_one(ProgressBar)
        if job.total_steps:
            share = job.current_step / job.total_steps
            of_epochs = f" / {epochs}" if epochs else ""
            text = (
                f"{stage}: {job.current_step} / {job.total_steps} steps ({share:.1%}) · "
                f"epoch {job.current_epoch:.2f}{of_epochs}"
            )
            bar.update(total=job.total_steps, progress=job.current_step)
        elif ended:  # an ended job's bar stands still (an indeterminate one animates, 15 frames a second)
            text = stage
            bar.update(total=1, progress=1 if job.status == "completed" else 0)
        else:
            text = stage
            bar.update(total=None)
        progress = Text()
        progress.append(f"{item.icon} {item.word}", style=item.color)
        progress.append(f"  {text}")
        self.query_one("#progress-text", Static).update(progress)
        self.query_one("#stats", Static).update(stats_text(detail, self.metrics, now))

    def _plot(self) -> None:
        self.query_one(ChartGrid).plot(self.metrics)

    def _append_events(self, events: list[JobEvent]) -> None:
        table = self.query_one("#event-log", DataTable)
        at_end = table.cursor_row >= table.row_count - 1
        for event in events:
            if self._shown(event):
                kind = Text(
                    event.type,
                    style="bold red" if event.type == "error" else "yellow" if event.type == "warning" else "",
                )
                table.add_row(
                    str(event.seq), event.ts.strftime("%H:%M:%S"), kind, event_summary(event), key=str(event.seq)
                )
        if at_end and table.row_count:
            table.move_cursor(row=table.row_count - 1)

    def _shown(self, event: JobEvent) -> bool:
        if self.filter == "*":
            return True
        if self.filter.startswith("-"):
            return event.type != self.filter[1:]
        return event.type == self.filter

    @on(Select.Changed, "#event-filter")
    def _filter(self, event: Select.Changed) -> None:
        self.filter = str(event.value)
        self.query_one("#event-log", DataTable).clear()
        self._append_events(self.events)

    @on(DataTable.RowHighlighted, "#event-log")
    def _event_detail(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value is None:
            return
        seq = int(event.row_key.value)
        found = next((e for e in self.events if e.seq == seq), None)
        if found is None:
            return
        self.query_one("#event-detail", Static).update(event_detail(found))

    def _evaluation(self, detail: JobDetail) -> None:
        self.query_one("#evaluation", Static).update(evaluation_view(detail.evaluation))

    def _details(self, detail: JobDetail) -> None:
        self.query_one("#details", Static).update(details_view(detail))

    # --- actions --------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "resume":  # only an interrupted job can resume: the footer shows R there alone
            return self.detail_status == JobStatus.INTERRUPTED
        return True

    def action_cancel_job(self) -> None:
        self.lorapod.cancel_job(self.job_id)

    def action_rate(self) -> None:
        self.lorapod.open_rate(self.job_id)

    def action_retry(self) -> None:
        self.lorapod.retry_job(self.job_id)

    def action_resume(self) -> None:
        self.lorapod.resume_job(self.job_id)

    def action_download(self) -> None:
        self.lorapod.download(self.job_id)

    def action_try_job(self) -> None:
        self.lorapod.try_job(self.job_id)

    def action_copy_path(self) -> None:
        detail = self.detail
        adapter = next((a for a in detail.artifacts if a.artifact_type == "adapter"), None) if detail else None
        if adapter is None:
            self.notify("no adapter package yet", severity="warning")
            return
        self.lorapod.copy_storage_path(adapter.storage_path)

    def action_export(self) -> None:
        if self.detail is not None:
            self.lorapod.export_metrics([self.detail.job.id])

    def action_report(self) -> None:
        self.lorapod.write_report([self.job_id])

    def action_compare(self) -> None:
        marks = self.lorapod.marked
        marks.add(self.job_id)
        if len(marks) >= 2:
            self.lorapod.open_compare(sorted(marks))
        else:
            self.notify("marked for compare: mark another job (space in the jobs table, or m in its monitor)")

    def action_tab(self, tab: str) -> None:
        # Leave the current pane first: focus inside it would pull the tabs back to it.
        self.set_focus(None)
        self.query_one(TabbedContent).active = tab
        if tab == "tab-events":
            self.query_one("#event-log", DataTable).focus()

    def action_maximise(self) -> None:
        shown = self.query_one(ChartGrid).cycle_maximised()
        self.notify(f"charts: {'all' if shown is None else shown.removeprefix('chart-')}", timeout=2)

    def action_window(self) -> None:
        window = self.query_one(ChartGrid).cycle_window()
        self.notify(f"charts: {'all steps' if window is None else f'last {window} steps'}", timeout=2)

    def action_smooth(self) -> None:
        state = self.query_one(ChartGrid).toggle(smooth=True)
        self.notify(f"charts: EMA smoothing {'on' if state else 'off'}", timeout=2)

    def action_log_scale(self) -> None:
        state = self.query_one(ChartGrid).toggle(log=True)
        self.notify(f"charts: log scale {'on' if state else 'off'}", timeout=2)

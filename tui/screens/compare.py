"""Compare jobs: overlaid loss curves, final metrics, evaluation side by side, and the config diff."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Static

from store.jobs import short_id
from tui.backend import Backend, JobDetail
from tui.cli.common import duration
from tui.errors import ReportsWorkerErrors
from tui.status import label
from tui.widgets.charts import MetricChart, measured
from tui.widgets.keyed import Footer

if TYPE_CHECKING:
    from tui.app import LorapodApp


# Each job's eval marks, in order (its training loss gets the next line marker).
EVAL_MARKS = ("◆", "◇", "■", "□", "▲", "△")


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.4f}" if value < 100 else f"{value:,.1f}"


class CompareScreen(ReportsWorkerErrors, Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="compare.back", tooltip="Back"),
        Binding("z", "maximise", "Maximise", id="compare.maximise", tooltip="The loss chart alone, or with the tables"),
        Binding(
            "w", "window", "Window", show=False, id="compare.window", tooltip="Loss chart: all steps, or the newest"
        ),
        Binding(
            "s", "smooth", "Smooth", show=False, id="compare.smooth", tooltip="Loss chart: EMA smoothing on or off"
        ),
        Binding("l", "log_scale", "Log scale", show=False, id="compare.log", tooltip="Loss chart: log scale on or off"),
        Binding("u", "unmark", "Clear marks", id="compare.unmark", tooltip="Forget the marked jobs"),
    ]

    def __init__(self, job_ids: list[str]) -> None:
        super().__init__()
        self.job_ids = job_ids

    @property
    def lorapod(self) -> LorapodApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield MetricChart("Loss: training as lines, eval as marks", id="compare-chart")
        with VerticalScroll(id="compare-tables"):
            yield Static(id="compare-summary")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load(self) -> None:
        details = self.lorapod.backend.compare(self.job_ids)
        self.app.call_from_thread(self._show, details, self.lorapod.backend.clock())

    def _show(self, details: list[JobDetail], now: datetime) -> None:
        if not self.is_mounted:  # a late answer for a screen already closed
            return
        series: dict[str, Any] = {}
        points: dict[str, str] = {}
        for index, detail in enumerate(details):
            name = short_id(detail.job.id)
            steps = [float(m.step) for m in detail.metrics]
            series[f"{name} loss"] = measured(steps, [m.loss for m in detail.metrics])
            evals = measured(steps, [m.eval_loss for m in detail.metrics])
            if evals[0]:
                series[f"{name} eval"] = evals
                points[f"{name} eval"] = EVAL_MARKS[index % len(EVAL_MARKS)]
        self.query_one(MetricChart).set_series(series, points)

        summary = Table(title="Jobs", title_justify="left")
        summary.add_column("")
        for detail in details:
            summary.add_column(short_id(detail.job.id), justify="right")

        def row(name: str, values: list[str]) -> None:
            summary.add_row(name, *values)

        def losses(detail: JobDetail, attribute: str) -> list[float]:
            return [getattr(m, attribute) for m in detail.metrics if getattr(m, attribute) is not None]

        row("status", [label(d.job.status) for d in details])
        row("preset", [d.job.preset or "—" for d in details])
        row("final loss", [_fmt(losses(d, "loss")[-1] if losses(d, "loss") else None) for d in details])
        row("best loss", [_fmt(min(losses(d, "loss"), default=None)) for d in details])
        row("best eval loss", [_fmt(min(losses(d, "eval_loss"), default=None)) for d in details])
        row("base perplexity", [_fmt(d.evaluation.base_perplexity if d.evaluation else None) for d in details])
        row("adapter perplexity", [_fmt(d.evaluation.adapter_perplexity if d.evaluation else None) for d in details])
        row("duration", [duration(d.job.started_at, d.job.completed_at or now) for d in details])
        row("cost", [f"${d.job.actual_cost_usd:,.2f}" for d in details])

        specs = [d.spec for d in details if d.spec is not None]
        config = Table(title="Configuration differences", title_justify="left")
        config.add_column("field")
        for detail in details:
            config.add_column(short_id(detail.job.id))
        differences = Backend.config_diff(specs) if len(specs) == len(details) else {}
        for field, values in differences.items():
            config.add_row(field, *(", ".join(v) if isinstance(v, list) else str(v) for v in values))
        if not differences:
            config.add_row("(the same configuration)", *("" for _ in details))

        generations = Table(title="Generations on the first held-out prompt", title_justify="left", show_lines=True)
        generations.add_column("job")
        generations.add_column("base")
        generations.add_column("adapter")
        for detail in details:
            first = ((detail.evaluation.generations if detail.evaluation else None) or [{}])[0]
            generations.add_row(short_id(detail.job.id), first.get("base") or "—", first.get("adapter") or "—")
        self.query_one("#compare-summary", Static).update(Group(summary, config, generations))

    def action_maximise(self) -> None:
        tables = self.query_one("#compare-tables")
        tables.display = not tables.display
        self.query_one(MetricChart).set_class(not tables.display, "maximised")

    def action_window(self) -> None:
        self.query_one(MetricChart).cycle_window()

    def action_smooth(self) -> None:
        chart = self.query_one(MetricChart)
        chart.set_view(smooth=not chart.smooth)

    def action_log_scale(self) -> None:
        chart = self.query_one(MetricChart)
        chart.set_view(log_scale=not chart.log_scale)

    def action_unmark(self) -> None:
        self.lorapod.marked.clear()
        self.notify("marks cleared")

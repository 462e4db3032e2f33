"""The monitor's charts: loss (with eval as ◆), learning rate, grad norm and GPU memory, in a grid that keeps
them readable — on a short terminal two taller charts instead of four flat ones, and one maximised on request.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.containers import Grid

from store.models import TrainingMetric
from tui.widgets.charts import MetricChart, Series, measured

# Below this many rows for the grid, it shows two charts side by side (the others: "z" maximises each in turn).
COMPACT_BELOW = 16


class ChartGrid(Grid):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.maximised: str | None = None  # the id of the chart shown alone
        self.has_gpu = False
        self.compact = False

    def compose(self) -> ComposeResult:
        loss = MetricChart("Loss", id="chart-loss")
        loss.pair = ("loss", "eval")
        yield loss
        yield MetricChart("Learning rate", id="chart-lr")
        yield MetricChart("Grad norm", id="chart-grad")
        gpu = MetricChart("GPU memory (GB)", id="chart-gpu")
        gpu.empty_message = "no GPU in this run"
        yield gpu

    @property
    def charts(self) -> list[MetricChart]:
        return list(self.query(MetricChart))

    def available(self) -> list[str]:
        """The charts this job has, in order."""
        return [c.id or "" for c in self.charts if c.id != "chart-gpu" or self.has_gpu]

    def plot(self, metrics: list[TrainingMetric]) -> None:
        steps = [float(m.step) for m in metrics]

        def series(name: str) -> Series:
            return measured(steps, [getattr(m, name) for m in metrics])

        self.query_one("#chart-loss", MetricChart).set_series(
            {"loss": series("loss"), "eval": series("eval_loss")}, points={"eval": "◆"}
        )
        self.query_one("#chart-lr", MetricChart).set_series({"lr": series("learning_rate")})
        self.query_one("#chart-grad", MetricChart).set_series({"grad norm": series("grad_norm")})
        gpu = series("gpu_memory_gb")
        self.has_gpu = bool(gpu[0])
        if self.has_gpu:
            self.query_one("#chart-gpu", MetricChart).set_series({"peak GB": gpu})
        self.lay_out()

    def on_resize(self, event: events.Resize) -> None:
        compact = event.size.height < COMPACT_BELOW
        if compact != self.compact:
            self.compact = compact
            self.lay_out()

    def lay_out(self) -> None:
        """Which charts show, and how the grid holds them."""
        available = self.available()
        if self.maximised is not None and self.maximised in available:
            shown = [self.maximised]
        elif self.compact:
            shown = available[:2]
        else:
            shown = available
        for chart in self.charts:
            chart.display = chart.id in shown
            chart.styles.column_span = 1
        if len(shown) == 3:  # loss, lr and grad norm (no GPU): grad norm takes the whole second row
            self.query_one("#chart-grad", MetricChart).styles.column_span = 2
        columns = 1 if len(shown) == 1 else 2
        rows = 1 if len(shown) <= 2 else 2
        self.styles.grid_size_columns, self.styles.grid_size_rows = columns, rows

    def cycle_maximised(self) -> str | None:
        """Maximise the first chart, then the next, and after the last show them all again."""
        available = self.available()
        if self.maximised is None or self.maximised not in available:
            self.maximised = available[0]
        else:
            index = available.index(self.maximised) + 1
            self.maximised = available[index] if index < len(available) else None
        self.lay_out()
        return self.maximised

    def cycle_window(self) -> int | None:
        window = None
        for chart in self.charts:
            window = chart.cycle_window()
        return window

    def toggle(self, *, smooth: bool = False, log: bool = False) -> bool:
        """Flip EMA smoothing or the log scale on every chart; returns the new state."""
        first = self.charts[0]
        state = not (first.smooth if smooth else first.log_scale)
        for chart in self.charts:
            chart.set_view(smooth=state if smooth else None, log_scale=state if log else None)
        return state

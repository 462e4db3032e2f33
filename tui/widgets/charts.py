"""Metric charts: plotext line plots a person can read in a terminal, fast at any length.

A series of 100,000 points is reduced to two points per column of the plot (the minimum and maximum of each
bucket, in order), so spikes survive and a redraw costs the same at a hundred points or a million. Series are
told apart without colour: each has its own marker, named in a legend under the plot (never on the data).
A chart can show the newest steps only, smooth its lines (EMA) and use a log scale, and the loss chart marks
where the eval loss rises while the training loss falls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual_plotext import PlotextPlot

Series = tuple[Sequence[float], Sequence[float]]

# How many of the newest steps a chart shows; "w" cycles through them (None: all).
WINDOWS: tuple[int | None, ...] = (None, 1000, 200, 50)
# Line markers in the order series get them, each with what the legend shows for it. Braille first: the finest.
LINE_MARKS: tuple[tuple[str, str], ...] = (("braille", "⣀⣀"), ("•", "••"), ("+", "++"), ("x", "xx"), ("o", "oo"))
EMA_WEIGHT = 0.8  # as TensorBoard's smoothing slider: each point keeps 80% of the smoothed value before it


def envelope(xs: Sequence[float], ys: Sequence[float], buckets: int) -> tuple[list[float], list[float]]:
    """At most ``2 × buckets`` points keeping each bucket's lowest and highest value, in x order.

    ``ys`` must be finite (series carry only the steps where a value was measured); the scan runs in C
    (``min``, ``max`` and ``index`` over slices), so 100,000 points take a few milliseconds.
    """
    count = len(ys)
    if count <= 2 * buckets or buckets <= 0:
        return list(xs), list(ys)
    out_x: list[float] = []
    out_y: list[float] = []
    size = count / buckets
    for b in range(buckets):
        start, end = int(b * size), int((b + 1) * size)
        if start >= end:
            continue
        chunk = ys[start:end]
        low, high = min(chunk), max(chunk)
        for index in sorted({start + chunk.index(low), start + chunk.index(high)}):
            out_x.append(xs[index])
            out_y.append(ys[index])
    return out_x, out_y


def measured(steps: Sequence[float], values: Sequence[float | None]) -> Series:
    """The steps where a value was measured (finite), and those values."""
    pairs = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None and math.isfinite(v)]
    return [s for s, _ in pairs], [v for _, v in pairs]


def ema(values: Sequence[float], weight: float = EMA_WEIGHT) -> list[float]:
    """Exponential moving average, debiased at the start (the first points are not pulled towards zero)."""
    out: list[float] = []
    smoothed, norm = 0.0, 0.0
    for value in values:
        smoothed = weight * smoothed + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out.append(smoothed / norm)
    return out


def diverging(train: Series, evals: Series) -> float | None:
    """The step after which the eval loss rose while the training loss fell (overfitting), or None.

    The last two evaluations rose, and the training loss over the same steps fell (its smoothed values, so one
    noisy step does not decide it)."""
    eval_x, eval_y = evals
    train_x, train_y = train
    if len(eval_y) < 2 or len(train_y) < 2 or eval_y[-1] <= eval_y[-2]:
        return None
    smooth = ema(train_y)

    def train_at(step: float) -> float | None:
        before = [v for s, v in zip(train_x, smooth, strict=True) if s <= step]
        return before[-1] if before else None

    start, end = train_at(eval_x[-2]), train_at(eval_x[-1])
    if start is None or end is None or end >= start:
        return None
    return float(eval_x[-2])


def y_limits(values: Sequence[float], log: bool) -> tuple[float, float] | None:
    """Limits for data plotext would otherwise spread over -1..1: all equal (zero or not), or one point."""
    if not values:
        return None
    low, high = min(values), max(values)
    if high > low:
        return None
    if log:
        return low / 2, low * 2
    if low == 0:
        return 0.0, 1.0
    pad = abs(low) * 0.1
    return low - pad, high + pad


class MetricChart(PlotextPlot):
    """One chart: named series over steps, the newest ``window`` steps, with a title, axis labels and a legend
    under the plot. ``points`` names series drawn as separate marks (eval: ◆); ``pair`` names a (train,
    eval) pair whose divergence is marked."""

    def __init__(self, title: str, *, ylabel: str = "", id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.ylabel = ylabel
        self.series: dict[str, Series] = {}
        self.points: dict[str, str] = {}
        self.pair: tuple[str, str] | None = None
        self.window: int | None = None
        self.smooth = False
        self.log_scale = False
        self.empty_message = "no data yet"
        self.diverged_at: float | None = None

    def set_series(self, series: dict[str, Series], points: dict[str, str] | None = None) -> None:
        self.series = series
        if points is not None:
            self.points = points
        self.replot()

    def cycle_window(self) -> int | None:
        index = WINDOWS.index(self.window) if self.window in WINDOWS else 0
        self.window = WINDOWS[(index + 1) % len(WINDOWS)]
        self.replot()
        return self.window

    def set_view(self, *, smooth: bool | None = None, log_scale: bool | None = None) -> None:
        if smooth is not None:
            self.smooth = smooth
        if log_scale is not None:
            self.log_scale = log_scale
        self.replot()

    def _prepared(self, name: str, all_x: Sequence[float], all_y: Sequence[float]) -> Series:
        cut = max(0, len(all_x) - self.window) if self.window else 0
        xs, ys = list(all_x[cut:]), list(all_y[cut:])
        if self.smooth and name not in self.points:
            ys = ema(ys)
        if self.log_scale:
            kept = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
            xs, ys = [x for x, _ in kept], [y for _, y in kept]
        return xs, ys

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        buckets = max(10, (self.size.width or 80) - 10)
        legend: list[str] = []
        drawn: list[float] = []
        lines = 0
        for name, (all_x, all_y) in self.series.items():
            if not all_x:
                continue
            xs, ys = self._prepared(name, all_x, all_y)
            if not xs:
                continue
            if name in self.points:
                mark = self.points[name]
                plt.scatter(xs, ys, marker=mark)
                legend.append(f"{mark} {name}")
            else:
                marker, shown = LINE_MARKS[lines % len(LINE_MARKS)]
                lines += 1
                px, py = envelope(xs, ys, buckets)
                plt.plot(px, py, marker=marker)
                legend.append(f"{shown} {name}")
            drawn.extend(ys)
        self.diverged_at = self._divergence()
        title = self.title
        if self.diverged_at is not None:
            plt.vline(self.diverged_at)
            title += f" ▲ eval rising while train falls (from step {self.diverged_at:g})"
        views = [
            f"last {self.window} steps" if self.window else "",
            "EMA" if self.smooth else "",
            "log" if self.log_scale else "",
        ]
        if any(views):
            title += " — " + ", ".join(v for v in views if v)
        if not drawn:
            plt.title(f"{self.title}: {self.empty_message}")
            self.refresh()
            return
        plt.title(title)
        if self.log_scale:
            plt.yscale("log")
        limits = y_limits(drawn, self.log_scale)
        if limits is not None:
            plt.ylim(*limits)
        if self.ylabel:
            plt.ylabel(self.ylabel)
        plt.xlabel("step   " + "   ".join(legend))
        self.refresh()

    def _divergence(self) -> float | None:
        if self.pair is None:
            return None
        train, evals = (self.series.get(name) for name in self.pair)
        if train is None or evals is None:
            return None
        return diverging(train, evals)

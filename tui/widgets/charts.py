"""Metric charts: plotext line plots that stay fast at any length by drawing a min–max envelope.

A series of 100,000 points is reduced to two points per column of the plot (the minimum and maximum of each
bucket, in order), so spikes survive and a redraw costs the same at a hundred points or a million.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual_plotext import PlotextPlot

Series = tuple[Sequence[float], Sequence[float]]

# How many of the newest steps a chart shows; "z" cycles through them (None: all).
WINDOWS: tuple[int | None, ...] = (None, 1000, 200, 50)


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


class MetricChart(PlotextPlot):
    """One chart: named series over steps, the newest ``window`` steps, with a title and axis labels."""

    def __init__(self, title: str, *, ylabel: str = "", id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.ylabel = ylabel
        self.series: dict[str, Series] = {}
        self.window: int | None = None
        self.empty_message = "no data yet"

    def set_series(self, series: dict[str, Series]) -> None:
        self.series = series
        self.replot()

    def cycle_window(self) -> int | None:
        index = WINDOWS.index(self.window) if self.window in WINDOWS else 0
        self.window = WINDOWS[(index + 1) % len(WINDOWS)]
        self.replot()
        return self.window

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        suffix = f" — last {self.window} steps" if self.window else ""
        plt.title(self.title + suffix)
        plt.xlabel("step")
        if self.ylabel:
            plt.ylabel(self.ylabel)
        buckets = max(10, (self.size.width or 80) - 10)
        drawn = False
        for name, (all_x, all_y) in self.series.items():
            if not all_x:
                continue
            cut = max(0, len(all_x) - self.window) if self.window else 0
            px, py = envelope(all_x[cut:], all_y[cut:], buckets)
            if px:
                plt.plot(px, py, label=name, marker="braille")
                drawn = True
        if not drawn:
            plt.title(f"{self.title}: {self.empty_message}")
        self.refresh()

"""The report's charts: matplotlib figures written as inline SVG (text kept as text, no scripts, no fonts).

Figures are built on ``matplotlib.figure.Figure`` directly, never through pyplot, so no global state is shared
and a dashboard worker thread can draw them.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from store.report.data import Curve, JobReport

# Colour-blind-safe (Okabe–Ito); each job keeps its colour in every chart, and lines also differ by style.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
STYLE: dict[Any, Any] = {  # matplotlib types its rc keys as a Literal of every name
    "svg.fonttype": "none",  # text as <text>: small, selectable, printed crisp
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 96,
}


def colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]


def _svg(figure: Figure, name: str) -> str:
    """The figure as an <svg> element for inline use: no XML prolog or doctype, ids unique to this chart."""
    buffer = io.StringIO()
    # A fixed salt per chart: the same report renders byte for byte the same, and two charts' ids never clash.
    with mpl.rc_context({**STYLE, "svg.hashsalt": f"lorapod-{name}"}):
        # Constrained layout already fits the labels: no second, "tight" layout pass.
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    # Scales with the page: the drawn size becomes the viewBox's, and CSS sets the width.
    label = r'<svg\1 role="img" aria-label="' + name + '"'
    return re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', label, text, count=1)


def _figure(height: float = 2.8) -> Figure:
    with mpl.rc_context(STYLE):
        return Figure(figsize=(7.2, height), layout="constrained")


def _plot(axes: object, curve: Curve, **style: object) -> None:
    axes.plot(curve.steps, curve.values, **style)  # type: ignore[attr-defined]


def loss_chart(jobs: Sequence[JobReport]) -> str | None:
    """Training loss (solid) and held-out loss (dashed, dotted points) over steps, one colour per job."""
    if not any(job.loss.steps or job.eval_loss.steps for job in jobs):
        return None
    with mpl.rc_context(STYLE):
        figure = _figure()
        axes = figure.add_subplot()
        several = len(jobs) > 1
        for index, job in enumerate(jobs):
            prefix = f"{job.label}: " if several else ""
            if job.loss.steps:
                _plot(axes, job.loss, color=colour(index), linewidth=1.4, label=f"{prefix}training loss")
            if job.eval_loss.steps:
                _plot(
                    axes, job.eval_loss, color=colour(index), linestyle="--", marker="o", markersize=3.5,
                    linewidth=1.2, label=f"{prefix}held-out loss",
                )  # fmt: skip
        axes.set_xlabel("optimizer step")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("loss")
        # Above the plot, never over the curves; one column per job, its training and held-out lines together.
        figure.legend(frameon=False, fontsize=8, loc="outside upper center", ncols=len(jobs) if several else 2)
        return _svg(figure, "loss")


def learning_rate_chart(jobs: Sequence[JobReport]) -> str | None:
    """The learning rate over steps (warmup, then the schedule)."""
    if not any(job.learning_rate.steps for job in jobs):
        return None
    with mpl.rc_context(STYLE):
        figure = _figure(2.2)
        axes = figure.add_subplot()
        for index, job in enumerate(jobs):
            if job.learning_rate.steps:
                _plot(axes, job.learning_rate, color=colour(index), linewidth=1.4, label=job.label)
        axes.set_xlabel("optimizer step")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("learning rate")
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if len(jobs) > 1:
            figure.legend(frameon=False, fontsize=8, loc="outside upper center", ncols=3)
        return _svg(figure, "learning-rate")


def perplexity_chart(jobs: Sequence[JobReport]) -> str | None:
    """Held-out perplexity of the base model beside the adapter's, per job (lower is better)."""
    pairs = [
        (job, job.evaluation.get("base_perplexity"), job.evaluation.get("adapter_perplexity"))
        for job in jobs
        if isinstance(job.evaluation.get("adapter_perplexity"), (int, float))
    ]
    if not pairs:
        return None
    with mpl.rc_context(STYLE):
        figure = _figure(max(1.4, 0.55 * len(pairs) + 0.9))
        axes = figure.add_subplot()
        labels = [job.label for job, _, _ in pairs]
        positions = list(range(len(pairs)))
        base = [float(b) if isinstance(b, (int, float)) else 0.0 for _, b, _ in pairs]
        adapter = [float(a) if isinstance(a, (int, float)) else 0.0 for _, _, a in pairs]
        height = 0.38
        bars = axes.barh([p - height / 2 for p in positions], base, height, color="#BBBBBB", label="base model")
        axes.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
        bars = axes.barh([p + height / 2 for p in positions], adapter, height, color=COLOURS[0], label="adapter")
        axes.bar_label(bars, fmt="%.2f", padding=3, fontsize=8)
        axes.set_yticks(positions, labels)
        axes.invert_yaxis()
        axes.set_xlabel("held-out perplexity (lower is better)")
        axes.set_xlim(0, max(base + adapter) * 1.18)
        axes.grid(axis="y", visible=False)
        figure.legend(frameon=False, fontsize=8, loc="outside upper center", ncols=2)
        return _svg(figure, "perplexity")

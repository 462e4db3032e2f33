"""Charts a person reads in a terminal: legend under the plot, series told apart without colour, one chart
maximised, smoothing and a log scale, sane axes, taller charts on a small terminal, and overfitting marked."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import presets
from store.db import Ledger
from store.ingest import ingest
from store.jobs import create_job
from store.settings import load_settings
from tests.test_tui import app_for, backend, monitor_of, settle
from tests.tui_fixtures import DATASET, NOW
from tui.app import LorapodApp
from tui.backend import Backend
from tui.widgets.charts import MetricChart, diverging, ema, y_limits

pytestmark = pytest.mark.anyio
__all__ = ["backend"]  # the populated ledger's backend (a fixture)


def drawn(chart: Any) -> list[str]:
    """The chart as the terminal shows it, line by line, without colour."""
    return list(chart.render().plain.splitlines())


def test_flat_and_single_point_data_get_sane_limits() -> None:
    assert y_limits([0.0, 0.0, 0.0], log=False) == (0.0, 1.0)
    assert y_limits([2.0], log=False) == pytest.approx((1.8, 2.2))
    assert y_limits([1.0, 2.0], log=False) is None
    assert y_limits([4.0], log=True) == (2.0, 8.0)


def test_ema_follows_a_constant_from_its_first_point() -> None:
    assert ema([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])
    smoothed = ema([0.0, 10.0, 0.0, 10.0])
    assert max(smoothed) < 10 and min(smoothed[1:]) > 0


def test_eval_rising_while_train_falls_is_found() -> None:
    train = ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, 1.9, 1.7, 1.5, 1.3, 1.1])
    assert diverging(train, ([2.0, 4.0, 6.0], [1.8, 1.6, 1.7])) == 4.0
    assert diverging(train, ([2.0, 4.0, 6.0], [1.8, 1.7, 1.6])) is None  # both falling: learning
    rising = ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    assert diverging(rising, ([2.0, 4.0, 6.0], [1.8, 1.6, 1.7])) is None  # both rising: diverging, not overfit


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_the_legend_is_under_the_plot_and_eval_is_drawn_as_marks(backend: Backend, size: Any) -> None:
    async with app_for(backend).run_test(size=size) as pilot:
        screen = await monitor_of(pilot, "00000002")
        lines = drawn(screen.query_one("#chart-loss", MetricChart))
        bottom = max(i for i, line in enumerate(lines) if "└" in line)
        legend = [i for i, line in enumerate(lines) if "eval" in line]
        assert legend and min(legend) > bottom  # never on the data
        assert "◆ eval" in lines[legend[0]] and "⣀⣀ loss" in lines[legend[0]]
        inside = "\n".join(lines[:bottom])
        assert inside.count("◆") == 2  # the evaluations at steps 20 and 40


async def test_compare_tells_each_jobs_series_apart_without_colour(backend: Backend) -> None:
    ids = ["00000001-0000-4000-8000-000000000001", "00000002-0000-4000-8000-000000000002"]
    async with app_for(backend).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        pilot.app.open_compare(ids)
        await settle(pilot)
        lines = drawn(pilot.app.screen.query_one("#compare-chart", MetricChart))
        bottom = max(i for i, line in enumerate(lines) if "└" in line)
        legend = "\n".join(lines[bottom:])
        for entry in ("⣀⣀ 00000001 loss", "◆ 00000001 eval", "•• 00000002 loss", "◇ 00000002 eval"):
            assert entry in legend
        inside = "\n".join(lines[:bottom])
        assert "◆" in inside and "◇" in inside and "•" in inside


async def test_z_maximises_one_chart_after_another_then_all(backend: Backend) -> None:
    async with app_for(backend).run_test(size=(120, 40)) as pilot:
        screen = await monitor_of(pilot, "00000002")

        def shown() -> list[str]:
            return [chart.id or "" for chart in screen.query(MetricChart) if chart.display]

        everything = shown()
        assert everything == ["chart-loss", "chart-lr", "chart-grad", "chart-gpu"]
        for expected in everything:
            await pilot.press("z")
            await settle(pilot)
            assert shown() == [expected]
            assert screen.query_one(f"#{expected}").size.height > 20
        await pilot.press("z")
        await settle(pilot)
        assert shown() == everything


async def test_smoothing_and_log_scale_by_key(backend: Backend) -> None:
    async with app_for(backend).run_test(size=(120, 40)) as pilot:
        screen = await monitor_of(pilot, "00000002")
        chart = screen.query_one("#chart-loss", MetricChart)
        await pilot.press("s")
        await settle(pilot)
        assert chart.smooth and "EMA" in "\n".join(drawn(chart)[:2])
        await pilot.press("l")
        await settle(pilot)
        assert chart.log_scale and "EMA, log" in "\n".join(drawn(chart)[:2])
        await pilot.press("s", "l")
        await settle(pilot)
        assert not chart.smooth and not chart.log_scale


async def test_a_small_terminal_shows_two_taller_charts(backend: Backend) -> None:
    async with app_for(backend).run_test(size=(80, 24)) as pilot:
        screen = await monitor_of(pilot, "00000002")
        shown = [chart for chart in screen.query(MetricChart) if chart.display]
        assert [chart.id for chart in shown] == ["chart-loss", "chart-lr"]
        assert all(chart.size.height >= 9 for chart in shown)


async def test_the_costs_trend_starts_at_zero_dollars(lorapod_home: Path) -> None:
    settings = load_settings()
    ledger = Ledger(settings.paths.ledger)
    create_job(ledger, presets.get("smoke").to_spec(DATASET), name="free")
    async with LorapodApp(Backend(settings, clock=lambda: NOW), follow=False).run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("dollar_sign")
        await settle(pilot)
        labels = [line.split("┤")[0].strip() for line in drawn(pilot.app.screen.query_one("#trend")) if "┤" in line]
        assert labels and all(not label.startswith("-") for label in labels), labels


async def test_the_loss_chart_marks_eval_rising_while_train_falls(backend: Backend) -> None:
    ledger = backend.ledger
    spec = presets.get("smoke").to_spec(DATASET).model_copy(update={"job_id": str(uuid.uuid4())})
    job = create_job(ledger, spec, name="overfits")
    events: list[dict[str, Any]] = [{"type": "stage", "stage": "training"}]
    for step in range(1, 61):
        at = {"step": step, "total_steps": 60, "epoch": step / 60, "elapsed": step * 2.0}
        events.append({"type": "metrics", **at, "loss": 2.0 - step / 40})
        if step % 20 == 0:
            events.append({"type": "metrics", **at, "eval_loss": {20: 1.6, 40: 1.5, 60: 1.7}[step]})
    ingest(ledger, job.id, [
        {"seq": i, "ts": (NOW + timedelta(seconds=i)).isoformat(), **e} for i, e in enumerate(events, start=1)
    ])  # fmt: skip
    async with app_for(backend).run_test(size=(120, 40)) as pilot:
        screen = await monitor_of(pilot, str(job.id)[:8])
        chart = screen.query_one("#chart-loss", MetricChart)
        assert chart.diverged_at == 40
        assert "▲ eval rising while train falls" in "\n".join(drawn(chart)[:2])

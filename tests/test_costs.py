"""The cost model and the budget: ranges that scale as they should, calibration, and budget decisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

import presets
from engine.config import Resources
from store.budget import crossed_limit, crossed_thresholds, may_start, month_alerts, month_spend, monthly_totals
from store.costs import calibration, estimate
from store.db import Ledger
from store.errors import CostError
from store.jobs import create_job, transition, update_job
from store.metrics import record_metrics
from store.models import TrainingJob
from store.settings import Settings, load_settings
from store.status import JobStatus
from tests.conftest import run_cli

H100 = "NVIDIA H100 80GB HBM3"


def test_estimate_is_a_range_that_scales_with_the_work() -> None:
    base = estimate(1_000_000, 70, H100)
    low, high = base.cost
    assert 0 < low < high
    assert base.hours[0] < base.hours[1]
    # Twice the tokens: twice the training time; overheads unchanged.
    double = estimate(2_000_000, 70, H100)
    assert double.training_hours[1] == pytest.approx(2 * base.training_hours[1])
    assert double.overhead_hours == base.overhead_hours
    # An 8B model trains ~70/8 times faster.
    small = estimate(1_000_000, 8, H100)
    assert small.tokens_per_second[0] == pytest.approx(base.tokens_per_second[0] * 70 / 8)
    # A slower GPU (PCIe) takes longer; two GPUs are faster but not twice as fast.
    assert estimate(1_000_000, 70, "NVIDIA H100 PCIe").training_hours[0] > base.training_hours[0]
    two = estimate(1_000_000, 70, H100, gpu_count=2)
    assert base.training_hours[0] / 2 < two.training_hours[0] < base.training_hours[0]
    assert two.rate_per_hour == pytest.approx(2 * base.rate_per_hour)


def test_public_anchors_give_the_defaults() -> None:
    result = estimate(786 * 3600, 70, H100, weights_cached=True)
    assert result.tokens_per_second == (393.0, 786.0)
    assert result.training_hours == pytest.approx((1.0, 2.0))
    assert "public anchors" in result.throughput_source


def test_community_cloud_and_settings_overrides_change_the_price() -> None:
    secure = estimate(1_000_000, 70, H100)
    community = estimate(1_000_000, 70, H100, cloud_type="COMMUNITY")
    assert community.price_per_gpu_hour < secure.price_per_gpu_hour
    settings = Settings(gpu_prices={H100: 1.0, f"{H100}:COMMUNITY": 0.5})
    assert estimate(1, 70, H100, settings=settings).price_per_gpu_hour == 1.0
    overridden = estimate(1, 70, H100, cloud_type="COMMUNITY", settings=settings)
    assert (overridden.price_per_gpu_hour, overridden.price_source) == (0.5, "settings gpu_prices")


def test_unknown_gpus_and_sizes_are_refused() -> None:
    with pytest.raises(CostError, match="unknown GPU 'RTX 9090'"):
        estimate(1, 70, "RTX 9090")
    with pytest.raises(CostError, match="model size"):
        estimate(1, 0, H100)


def _completed_job(ledger: Ledger, tokens_per_second: float, gpu: str = H100) -> TrainingJob:
    job = create_job(ledger, presets.get("balanced").to_spec("d.json"))
    transition(ledger, job.id, JobStatus.TRAINING, gpu_type=gpu)
    record_metrics(ledger, job.id, [{"step": s, "tokens_per_second": tokens_per_second} for s in (10, 20, 30)])
    return transition(ledger, job.id, JobStatus.COMPLETED, actual_cost_usd=10.0)


def test_measured_throughput_replaces_the_defaults(ledger: Ledger) -> None:
    assert calibration(ledger) is None
    _completed_job(ledger, 1000.0)
    _completed_job(ledger, 1200.0)
    running = create_job(ledger, presets.get("balanced").to_spec("d.json"))
    transition(ledger, running.id, JobStatus.TRAINING, gpu_type=H100)
    record_metrics(ledger, running.id, [{"step": 1, "tokens_per_second": 5.0}])  # not completed: ignored
    measured = calibration(ledger)
    assert measured is not None and measured.jobs == 2
    assert (measured.low, measured.high) == pytest.approx((900.0, 1320.0))
    result = estimate(1_000_000, 70, H100, calibration=measured)
    assert result.tokens_per_second == pytest.approx((900.0, 1320.0))
    assert "measured on 2 completed jobs" in result.throughput_source
    # A PCIe measurement is normalised to the reference GPU by TFLOP/s.
    _completed_job(ledger, 756.0 / 989.0 * 1000.0, gpu="NVIDIA H100 PCIe")
    again = calibration(ledger)
    assert again is not None and again.jobs == 3 and again.low == pytest.approx(900.0)


def test_estimate_command_uses_preset_epochs_and_checks_the_budget() -> None:
    result = run_cli("estimate", "--tokens", "1000000", "--preset", "balanced", "--gpu", H100, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["epochs"], data["tokens"]) == (3, 3_000_000)
    assert data["cost_usd"][0] < data["cost_usd"][1]
    assert data["budget"]["allowed"] is True
    refused = run_cli("estimate", "--tokens", "200000000", "--json")
    assert json.loads(refused.stdout)["budget"]["allowed"] is False
    human = run_cli("estimate", "--tokens", "1000000")
    assert "estimate:" in human.stdout and "$" in human.stdout


def test_the_speed_up_of_several_gpus_rests_on_a_measurement_or_is_named_an_assumption() -> None:
    from store.throughput import BenchMeasurement

    assumed = estimate(1_000_000, 70, H100, gpu_count=2, measurements=[])
    assert assumed.scaling["kind"] == "assumption" and assumed.scaling["speedup"] == pytest.approx(1.7)
    assert "an assumption, not measured by lorapod" in assumed.scaling["label"]
    assert estimate(1_000_000, 70, H100, measurements=[]).scaling["kind"] == "one GPU"
    on_two = BenchMeasurement(
        gpu_id=H100, model_b=70, tokens_per_second=700.0, measured_at="2026-12-01T00:00:00+00:00",
        measured_at_from="report", recorded_at="2026-12-01T00:00:00+00:00", device_name="NVIDIA H100 80GB HBM3",
        source="bench-2gpu.json", forced=False, conditions={"gpus": 2, "scaling_efficiency": 0.95},
    )  # fmt: skip
    measured = estimate(1_000_000, 70, H100, gpu_count=2, measurements=[on_two])
    assert measured.scaling["kind"] == "measured" and measured.scaling["speedup"] == pytest.approx(1.9)
    one = estimate(1_000_000, 70, H100, measurements=[on_two])
    assert measured.tokens_per_second[0] == pytest.approx(1.9 * one.tokens_per_second[0])
    # A measurement on two GPUs says nothing of four: that speed-up stays an assumption.
    assert estimate(1_000_000, 70, H100, gpu_count=4, measurements=[on_two]).scaling["kind"] == "assumption"

    human = run_cli("estimate", "--tokens", "1000000", "--gpu-count", "2")
    assert human.exit_code == 0, human.output
    assert "speed-up 1.7× on 2 GPUs, an assumption, not measured by lorapod" in human.stdout


def test_estimate_command_refuses_an_unknown_gpu_cleanly() -> None:
    result = run_cli("estimate", "--tokens", "10", "--gpu", "RTX 9090")
    assert result.exit_code == 1
    assert "unknown GPU" in result.stderr and "NVIDIA H100 80GB HBM3" in result.stderr


# --- budget ---------------------------------------------------------------------------------------------


def _job_with_cost(ledger: Ledger, cost: float, status: JobStatus, estimated: float | None = None) -> None:
    job = create_job(ledger, presets.get("balanced").to_spec("d.json"), estimated_cost_usd=estimated)
    transition(ledger, job.id, JobStatus.TRAINING)
    if status is not JobStatus.TRAINING:
        transition(ledger, job.id, status)
    update_job(ledger, job.id, actual_cost_usd=cost)


def test_month_spend_counts_finished_and_live_jobs(ledger: Ledger) -> None:
    _job_with_cost(ledger, 100.0, JobStatus.COMPLETED)
    _job_with_cost(ledger, 50.0, JobStatus.FAILED)
    _job_with_cost(ledger, 20.0, JobStatus.TRAINING, estimated=60.0)
    month = month_spend(ledger)
    assert (month.spent, month.active_cost, month.committed) == (170.0, 20.0, 40.0)
    assert (month.active_jobs, month.finished_jobs, month.average_per_job) == (1, 2, 75.0)
    next_month = month_spend(ledger, datetime.now(UTC) + timedelta(days=40))
    assert next_month.spent == 0.0
    assert monthly_totals(ledger)[0]["spent"] == 170.0


def test_may_start_refuses_over_the_ceiling_or_the_month(ledger: Ledger) -> None:
    settings = load_settings()
    _job_with_cost(ledger, 300.0, JobStatus.COMPLETED)
    month = month_spend(ledger)
    ok = may_start(settings, month, 50.0)
    assert ok.allowed and any("80%" in a for a in ok.alerts)
    too_big = may_start(settings, month, 160.0)
    assert not too_big.allowed
    assert any("per-job ceiling of $150.00" in r for r in too_big.reasons)
    assert any("monthly budget of $400.00" in r for r in too_big.reasons)
    month_full = may_start(settings, month, 120.0)
    assert not month_full.allowed and len(month_full.reasons) == 1


def test_thresholds_and_month_alerts() -> None:
    settings = Settings(monthly_budget_usd=100.0)
    assert crossed_thresholds(settings, 70.0, 96.0) == [0.8, 0.95]
    assert crossed_thresholds(settings, 81.0, 90.0) == []
    month = type("M", (), {"month": "2026-11", "spent": 96.0})()
    assert "96%" in month_alerts(settings, month)[0]  # type: ignore[arg-type]


def test_crossed_limit_names_the_limit() -> None:
    settings = Settings()
    assert crossed_limit(settings, None, 199.0, 23.0) is None
    cost = crossed_limit(settings, None, 200.0, 1.0)
    assert cost is not None and cost.kind == "cost" and "hard cap" in cost.reason
    duration = crossed_limit(settings, None, 1.0, 24.0)
    assert duration is not None and duration.kind == "duration"
    own = crossed_limit(settings, Resources(max_cost_usd=20.0, max_hours=2.0), 25.0, 0.5)
    assert own is not None and "max_cost_usd" in own.reason
    hours = crossed_limit(settings, Resources(max_hours=2.0), 1.0, 2.5)
    assert hours is not None and "max_hours" in hours.reason


def test_costs_command_reports_the_month(ledger: Ledger) -> None:
    _job_with_cost(ledger, 340.0, JobStatus.COMPLETED)
    data = json.loads(run_cli("costs", "--json").stdout)
    assert (data["spent"], data["budget"], data["remaining"]) == (340.0, 400.0, 60.0)
    assert data["alerts"] and "85%" in data["alerts"][0]
    assert data["months"][0]["jobs"] == 1
    human = run_cli("costs")
    assert "$340.00 of $400.00" in human.stdout

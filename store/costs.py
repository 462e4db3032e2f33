"""The cost model: a job's duration and cost as a range, from tokens, GPU prices and throughput.

Throughput is expressed in "reference tokens/s" — tokens per second of one reference GPU (H100 SXM) on
the reference model size (70B) — and scaled to a job by the GPU's dense bf16 TFLOP/s, the model size
(training FLOPs ≈ 6·N·tokens, so tokens/s ∝ 1/N) and the GPU count.

What an estimate rests on, first found wins (``Estimate.throughput_basis`` says which):

1. completed jobs' measured tokens/s (``calibration(ledger)``): the real workload, end to end;
2. a bench measurement (``lorapod costs calibrate``, ``store.throughput``): the job's GPU's own, else the
   reference GPU's, else the newest, scaled to the job's GPU and model size;
3. the public anchors in ``presets/gpus.toml``, named in the estimate; nothing of lorapod's measured them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from engine.config import model_size_from_name
from presets.gpus import Catalogue, Gpu, catalogue
from store.db import Ledger
from store.errors import CostError
from store.models import TrainingJob, TrainingMetric
from store.settings import Settings
from store.status import JobStatus
from store.throughput import BenchMeasurement, load_measurements

# A calibrated range is the measured spread widened by this much either side (more with one sample).
CALIBRATION_MARGIN = 0.10
SINGLE_SAMPLE_MARGIN = 0.15
# A bench report times the training step alone, on full packed sequences; a job adds evaluation passes,
# checkpoints, logging and data collation around it. Its range runs from 20% below the measurement up to it.
BENCH_JOB_SHARE = (0.8, 1.0)


@dataclass(frozen=True)
class Calibration:
    """Measured throughput of completed jobs, in reference tokens/s."""

    low: float
    high: float
    jobs: int

    @property
    def label(self) -> str:
        return f"measured on {self.jobs} completed job{'s' * (self.jobs != 1)}"


@dataclass(frozen=True)
class Estimate:
    tokens: int  # trained tokens, all epochs
    gpu_id: str
    gpu_label: str
    gpu_count: int
    cloud_type: str
    price_per_gpu_hour: float
    price_source: str
    tokens_per_second: tuple[float, float]  # whole pod, (low, high)
    throughput_source: str
    training_hours: tuple[float, float]
    overhead_hours: tuple[float, float]
    # What the throughput rests on: {"kind": "jobs" | "bench" | "public anchors", "label", "reference_tokens_per_
    # second", and the measurement or the anchors}. ``throughput_source`` is its label.
    throughput_basis: dict[str, Any] = field(default_factory=dict)
    # What the speed-up of several GPUs rests on: {"kind": "one GPU" | "measured" | "assumption", "efficiency",
    # "speedup", "label"}.
    scaling: dict[str, Any] = field(default_factory=dict)

    @property
    def hours(self) -> tuple[float, float]:
        return (self.training_hours[0] + self.overhead_hours[0], self.training_hours[1] + self.overhead_hours[1])

    @property
    def rate_per_hour(self) -> float:
        return self.price_per_gpu_hour * self.gpu_count

    @property
    def cost(self) -> tuple[float, float]:
        low, high = self.hours
        return (low * self.rate_per_hour, high * self.rate_per_hour)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            hours=list(self.hours), cost_usd=[round(c, 2) for c in self.cost], rate_usd_per_hour=self.rate_per_hour
        )
        return data


def gpu_price(gpu: Gpu, cloud_type: str, settings: Settings | None = None) -> tuple[float, str]:
    """USD per GPU-hour and where the figure comes from: a settings override, RunPod's price query (cached),
    or the catalogue."""
    overrides = settings.gpu_prices if settings is not None else {}
    for key in (f"{gpu.id}:{cloud_type.upper()}", gpu.id):
        if key in overrides:
            return overrides[key], "settings gpu_prices"
    if settings is not None:
        live = live_prices(settings.paths.cache_dir)
        price = live.price(gpu.id, cloud_type) if live is not None else None
        if live is not None and price is not None:
            return price, f"RunPod price query ({live.fetched_at:%Y-%m-%d %H:%M} UTC)"
    return gpu.price(cloud_type), f"catalogue ({catalogue().prices_as_of})"


PRICE_CACHE = "runpod-gpu-prices.json"
PRICE_CACHE_HOURS = 24.0


@dataclass(frozen=True)
class LivePrices:
    """GPU prices from RunPod's price query, USD per GPU-hour by GPU id and cloud."""

    fetched_at: datetime
    prices: dict[str, dict[str, float]]

    def price(self, gpu_id: str, cloud_type: str) -> float | None:
        value = self.prices.get(gpu_id, {}).get(cloud_type.lower())
        return value if value else None  # 0 or missing: not offered in that cloud right now

    def age_hours(self, now: datetime | None = None) -> float:
        return ((now or datetime.now(UTC)) - self.fetched_at).total_seconds() / 3600


def live_prices(cache_dir: Path, *, max_age_hours: float = PRICE_CACHE_HOURS) -> LivePrices | None:
    """The cached price query when it is fresh enough, else None."""
    try:
        data = json.loads((cache_dir / PRICE_CACHE).read_text(encoding="utf-8"))
        cached = LivePrices(datetime.fromisoformat(data["fetched_at"]), dict(data["prices"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cached if cached.age_hours() <= max_age_hours else None


def write_live_prices(cache_dir: Path, prices: dict[str, dict[str, float]]) -> LivePrices:
    """Cache a price query's answer: {gpu id: {"secure": usd, "community": usd}}."""
    cached = LivePrices(datetime.now(UTC), prices)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{PRICE_CACHE}.tmp"
    tmp.write_text(json.dumps({"fetched_at": cached.fetched_at.isoformat(), "prices": prices}), encoding="utf-8")
    tmp.replace(cache_dir / PRICE_CACHE)
    return cached


def find_gpu(gpu_id: str, cat: Catalogue | None = None) -> Gpu:
    cat = cat or catalogue()
    gpu = cat.find(gpu_id)
    if gpu is None:
        known = "; ".join(f"{g.id} ({g.label})" for g in cat.gpu)
        raise CostError(f"unknown GPU {gpu_id!r}; known: {known}")
    return gpu


def reference_throughput(tokens_per_second: float, gpu: Gpu, model_b: float, gpu_count: int) -> float:
    """A measured pod throughput converted to reference tokens/s (one reference GPU, reference size)."""
    cat = catalogue()
    scale = _pod_scale(gpu, model_b, gpu_count, cat)
    return tokens_per_second / scale


def _pod_scale(gpu: Gpu, model_b: float, gpu_count: int, cat: Catalogue, efficiency: float | None = None) -> float:
    t = cat.throughput
    gpus = gpu_count * ((efficiency or t.multi_gpu_efficiency) if gpu_count > 1 else 1.0)
    return (gpu.bf16_tflops / cat.reference.bf16_tflops) * (t.reference_model_b / model_b) * gpus


def estimate(
    tokens: int,
    model_b: float,
    gpu_id: str,
    *,
    gpu_count: int = 1,
    cloud_type: str = "SECURE",
    settings: Settings | None = None,
    calibration: Calibration | None = None,
    measurements: Sequence[BenchMeasurement] | None = None,
    weights_cached: bool = False,
) -> Estimate:
    """Duration and cost range of training ``tokens`` (all epochs) of a ``model_b``-billion model.

    ``measurements`` are bench measurements (``store.throughput``); unset, those recorded in the installation
    when ``settings`` are given, else none."""
    if tokens < 0:
        raise CostError("tokens must not be negative")
    if model_b <= 0:
        raise CostError("the model size must be positive (set model_size_b)")
    cat = catalogue()
    gpu = find_gpu(gpu_id, cat)
    price, price_source = gpu_price(gpu, cloud_type, settings)
    if measurements is None:
        measurements = load_measurements(settings.paths.data_dir) if settings is not None else []
    basis = throughput_basis(gpu, model_b, calibration=calibration, measurements=measurements)
    ref_low, ref_high = basis["reference_tokens_per_second"]
    scaling = scaling_basis(gpu_count, measurements, cat)
    scale = _pod_scale(gpu, model_b, gpu_count, cat, scaling["efficiency"])
    tps = (ref_low * scale, ref_high * scale)
    # The slow end of throughput gives the long end of the duration.
    training = (tokens / tps[1] / 3600, tokens / tps[0] / 3600)
    o = cat.overheads_minutes
    parts = [o.pod_start, o.evaluation, o.upload] + ([] if weights_cached else [o.weights])
    # Weight download and load grow with the model; the anchors are for 70B.
    overhead = (
        sum(p[0] for p in parts) / 60 * _size_factor(model_b, cat),
        sum(p[1] for p in parts) / 60 * _size_factor(model_b, cat),
    )
    return Estimate(
        tokens=tokens,
        gpu_id=gpu.id,
        gpu_label=gpu.label,
        gpu_count=gpu_count,
        cloud_type=cloud_type.upper(),
        price_per_gpu_hour=price,
        price_source=price_source,
        tokens_per_second=tps,
        throughput_source=basis["label"],
        training_hours=training,
        overhead_hours=overhead,
        throughput_basis=basis,
        scaling=scaling,
    )


def scaling_basis(gpu_count: int, measurements: Sequence[BenchMeasurement], cat: Catalogue) -> dict[str, Any]:
    """The speed-up of ``gpu_count`` GPUs over one and what it rests on: a bench measurement on that many GPUs
    (its conditions carry ``gpus`` and ``scaling_efficiency``), else the catalogue's assumption, named as such."""
    if gpu_count <= 1:
        return {"kind": "one GPU", "efficiency": 1.0, "speedup": 1.0, "label": "one GPU: no speed-up to assume"}
    measured = [
        m
        for m in measurements
        if int(m.conditions.get("gpus", 1)) == gpu_count and m.conditions.get("scaling_efficiency") is not None
    ]
    if measured:
        newest = max(measured, key=lambda m: m.recorded_at)
        efficiency = float(newest.conditions["scaling_efficiency"])
        label = f"measured on {gpu_count} × {newest.device_name} ({newest.date}, {newest.source})"
        kind = "measured"
    else:
        efficiency = cat.throughput.multi_gpu_efficiency
        label = (
            f"an assumption, not measured by lorapod: each GPU at {efficiency:.0%} of one alone "
            "(presets/gpus.toml multi_gpu_efficiency); no bench measurement on that many GPUs is recorded"
        )
        kind = "assumption"
    speedup = round(gpu_count * efficiency, 2)
    return {
        "kind": kind,
        "efficiency": efficiency,
        "speedup": speedup,
        "label": f"{speedup:g}× on {gpu_count} GPUs, {label}",
    }


def throughput_basis(
    gpu: Gpu, model_b: float, *, calibration: Calibration | None, measurements: Sequence[BenchMeasurement]
) -> dict[str, Any]:
    """What an estimate for ``gpu`` rests on, with its range in reference tokens/s (see the module docstring)."""
    cat = catalogue()
    if calibration is not None:
        return {
            "kind": "jobs",
            "label": calibration.label,
            "reference_tokens_per_second": (calibration.low, calibration.high),
            "jobs": calibration.jobs,
        }
    chosen = choose_measurement(measurements, gpu)
    if chosen is not None:
        measured_on = find_gpu(chosen.gpu_id, cat)
        reference = chosen.tokens_per_second / _pod_scale(measured_on, chosen.model_b, 1, cat)
        scaled = []
        if measured_on.id != gpu.id:
            scaled.append(f"to {gpu.label} by bf16 TFLOP/s ({gpu.bf16_tflops:g} vs {measured_on.bf16_tflops:g})")
        if abs(model_b / chosen.model_b - 1) > 0.02:
            scaled.append(f"to {model_b:g}B by model size")
        label = f"measured: {chosen.label}" + (f"; scaled {' and '.join(scaled)}" if scaled else "")
        low, high = BENCH_JOB_SHARE
        return {
            "kind": "bench",
            "label": label,
            "reference_tokens_per_second": (reference * low, reference * high),
            "measurement": chosen.as_dict(),
        }
    t = cat.throughput
    return {
        "kind": "public anchors",
        "label": (
            f"public anchors, not measured by lorapod: {t.tokens_per_second_low:,.0f}–{t.tokens_per_second_high:,.0f} "
            f"tokens/s for {t.reference_model_b:g}B QLoRA on one {cat.reference.label} ({t.source}; "
            "presets/gpus.toml)"
        ),
        "reference_tokens_per_second": (t.tokens_per_second_low, t.tokens_per_second_high),
        "anchors": t.model_dump(),
    }


def choose_measurement(measurements: Sequence[BenchMeasurement], gpu: Gpu) -> BenchMeasurement | None:
    """The job's GPU's own measurement, else the reference GPU's, else the newest (of GPUs still catalogued)."""
    cat = catalogue()
    usable = [m for m in measurements if cat.find(m.gpu_id) is not None]
    for wanted in (gpu.id, cat.reference.id):
        own = [m for m in usable if m.gpu_id == wanted]
        if own:
            return max(own, key=lambda m: m.recorded_at)
    return max(usable, key=lambda m: m.recorded_at, default=None)


def _size_factor(model_b: float, cat: Catalogue) -> float:
    # Pod start dominates small models; never below a third of the 70B overheads.
    return max(1 / 3, min(1.5, model_b / cat.throughput.reference_model_b))


def calibration(ledger: Ledger, *, limit: int = 20) -> Calibration | None:
    """Throughput measured by recent completed GPU jobs, in reference tokens/s; None before the first."""
    mean_tps = (
        select(TrainingMetric.job_id, sa.func.avg(TrainingMetric.tokens_per_second).label("tps"))
        .where(col(TrainingMetric.tokens_per_second).is_not(None))
        .group_by(col(TrainingMetric.job_id))
        .subquery()
    )
    statement = (
        select(TrainingJob, mean_tps.c.tps)
        .join(mean_tps, mean_tps.c.job_id == TrainingJob.id)
        .where(col(TrainingJob.status) == JobStatus.COMPLETED, col(TrainingJob.gpu_type).is_not(None))
        .order_by(col(TrainingJob.completed_at).desc())
        .limit(limit)
    )
    with ledger.read() as session:
        rows = session.exec(statement).all()
    samples = []
    cat = catalogue()
    for job, tps in rows:
        gpu = cat.find(job.gpu_type or "")
        size = (job.spec or {}).get("model_size_b") or model_size_from_name(job.base_model)
        if gpu is None or not size or not tps:
            continue
        count = int((job.resources or {}).get("gpu_count", 1))
        samples.append(reference_throughput(float(tps), gpu, float(size), count))
    if not samples:
        return None
    margin = CALIBRATION_MARGIN if len(samples) > 1 else SINGLE_SAMPLE_MARGIN
    return Calibration(low=min(samples) * (1 - margin), high=max(samples) * (1 + margin), jobs=len(samples))


def throughput_summary(ledger: Ledger, settings: Settings) -> dict[str, Any]:
    """Everything estimates may rest on, in the order they are tried, and what an H100 70B estimate uses now."""
    cat = catalogue()
    jobs = calibration(ledger)
    measurements = load_measurements(settings.paths.data_dir)
    reference = (cat.reference, cat.throughput.reference_model_b)
    return {
        "order": ["completed jobs", "bench measurements (lorapod costs calibrate)", "public anchors"],
        "jobs": None if jobs is None else asdict(jobs) | {"label": jobs.label},
        "bench": [m.as_dict() for m in measurements],
        "public_anchors": throughput_basis(*reference, calibration=None, measurements=[])["label"],
        "in_use": throughput_basis(*reference, calibration=jobs, measurements=measurements),
    }

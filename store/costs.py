"""The cost model: a job's duration and cost as a range, from tokens, GPU prices and throughput.

Throughput is expressed in "reference tokens/s" — tokens per second of one reference GPU (H100 SXM) on
the reference model size (70B) — and scaled to a job by the GPU's dense bf16 TFLOP/s, the model size
(training FLOPs ≈ 6·N·tokens, so tokens/s ∝ 1/N) and the GPU count. The defaults come from public
anchors (``presets/gpus.toml``); once completed jobs exist, their measured tokens/s replace them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
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

# A calibrated range is the measured spread widened by this much either side (more with one sample).
CALIBRATION_MARGIN = 0.10
SINGLE_SAMPLE_MARGIN = 0.15


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


def _pod_scale(gpu: Gpu, model_b: float, gpu_count: int, cat: Catalogue) -> float:
    t = cat.throughput
    gpus = gpu_count * (t.multi_gpu_efficiency if gpu_count > 1 else 1.0)
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
    weights_cached: bool = False,
) -> Estimate:
    """Duration and cost range of training ``tokens`` (all epochs) of a ``model_b``-billion model."""
    if tokens < 0:
        raise CostError("tokens must not be negative")
    if model_b <= 0:
        raise CostError("the model size must be positive (set model_size_b)")
    cat = catalogue()
    gpu = find_gpu(gpu_id, cat)
    price, price_source = gpu_price(gpu, cloud_type, settings)
    if calibration is not None:
        ref_low, ref_high, source = calibration.low, calibration.high, calibration.label
    else:
        ref_low, ref_high = cat.throughput.tokens_per_second_low, cat.throughput.tokens_per_second_high
        source = "public anchors (presets/gpus.toml)"
    scale = _pod_scale(gpu, model_b, gpu_count, cat)
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
        throughput_source=source,
        training_hours=training,
        overhead_hours=overhead,
    )


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

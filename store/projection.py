"""A training run projected: the cost model's time and cost range beside the FLOP-bound ideal (6·N·tokens).

``project_run`` reads no files and no settings: give it the trained tokens and, when there is one, the JSON
object ``python -m engine bench --json`` printed on the GPU, and it says what the run would take with the
estimate resting on that measurement (else on the public anchors) and what the GPU's peak would allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from store.costs import Calibration, Estimate, estimate, find_gpu
from store.throughput import measurement_from_report

# A stated MFU for the ideal's second figure: what well-tuned dense bf16 training reaches on an H100. QLoRA
# pays for dequantizing NF4 weights on every forward and recomputed forward, so it usually runs below this.
DEFAULT_MFU = 0.40
FLOPS_PER_PARAMETER_TOKEN = 6  # training FLOPs ≈ 6·N per token (forward 2N, backward 4N)


@dataclass(frozen=True)
class RunProjection:
    tokens: int  # trained tokens, all epochs
    parameters: float  # N, for the ideal
    parameters_from: str
    peak_tflops: float  # the GPU's dense bf16 peak
    estimate: Estimate
    mfu: float  # the stated MFU of the second ideal

    @property
    def flops(self) -> float:
        return FLOPS_PER_PARAMETER_TOKEN * self.parameters * self.tokens

    def ideal_hours(self, mfu: float = 1.0) -> float:
        """Hours of pure training at ``mfu`` of the peak on the estimate's GPUs (no overheads)."""
        return self.flops / (self.peak_tflops * 1e12 * mfu * self.estimate.gpu_count) / 3600

    def ideal_cost(self, mfu: float = 1.0) -> float:
        return self.ideal_hours(mfu) * self.estimate.rate_per_hour

    @property
    def implied_mfu(self) -> tuple[float, float]:
        """The MFU the estimate's throughput range amounts to, by the same 6·N."""
        per_gpu = [tps / self.estimate.gpu_count for tps in self.estimate.tokens_per_second]
        low, high = (FLOPS_PER_PARAMETER_TOKEN * self.parameters * tps / (self.peak_tflops * 1e12) for tps in per_gpu)
        return (low, high)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "parameters": self.parameters,
            "parameters_from": self.parameters_from,
            "peak_tflops": self.peak_tflops,
            "estimate": self.estimate.as_dict(),
            "flops": self.flops,
            "ideal": {
                "at_100_percent": {"hours": self.ideal_hours(), "cost_usd": self.ideal_cost()},
                "mfu": self.mfu,
                "at_mfu": {"hours": self.ideal_hours(self.mfu), "cost_usd": self.ideal_cost(self.mfu)},
            },
            "implied_mfu": list(self.implied_mfu),
        }


def project_run(
    tokens: int,
    model_b: float,
    gpu_id: str,
    *,
    bench_report: dict[str, Any] | None = None,
    calibration: Calibration | None = None,
    parameters: float | None = None,
    gpu_count: int = 1,
    cloud_type: str = "SECURE",
    mfu: float = DEFAULT_MFU,
) -> RunProjection:
    """Project a run of ``tokens`` trained tokens of a ``model_b``-billion model on ``gpu_id``.

    ``bench_report``: a GPU bench report to rest the estimate on (CalibrationError when it cannot calibrate
    ``gpu_id``'s estimates); ``parameters``: N for the ideal, else the report's extrapolated count, else
    ``model_b`` billions."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu {mfu}: must lie in (0, 1]")
    measurements = []
    parameters_from = "as given"
    if bench_report is not None:
        measurement, _ = measurement_from_report(bench_report, gpu_id=gpu_id, source="bench report")
        measurements.append(measurement)
        if parameters is None:
            parameters, parameters_from = measurement.model_b * 1e9, "the bench report's extrapolated model"
    if parameters is None:
        parameters, parameters_from = model_b * 1e9, f"{model_b:g} × 10⁹ (the model's nominal size)"
    result = estimate(
        tokens,
        model_b,
        gpu_id,
        gpu_count=gpu_count,
        cloud_type=cloud_type,
        calibration=calibration,
        measurements=measurements,
    )
    return RunProjection(
        tokens=tokens,
        parameters=parameters,
        parameters_from=parameters_from,
        peak_tflops=find_gpu(gpu_id).bf16_tflops,
        estimate=result,
        mfu=mfu,
    )

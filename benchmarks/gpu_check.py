"""``benchmarks/gpu_check.sh``: one GPU's figures from one call of at most 8 minutes.

In order, while the time budget lasts (each part starts only if its estimate fits; what does not is reported as
skipped):

1. ``python -m engine bench`` (in this process, one configuration after another) at K layers, L=4096, batch 1
   and 4: the engine's defaults on this machine, then each speed setting switched the other way (attention,
   Liger, torch.compile, the fp32 upcast, the optimizer). A setting the machine cannot run is reported refused.
2. A full engine job (benchmarks.gpu_job) on a Llama-3-70B-shaped K-layer model through prepare → train →
   evaluate → package at the balanced preset's batch and length.
3. ``lorapod costs calibrate`` fed with the batch-4 default report (in a LORAPOD_HOME under the output folder).

Figures: tokens/s, MFU in both conventions (6·N and 4·N + 2·N), peak memory and the 80-layer extrapolation
(``engine.bench``'s formulas). Everything goes to ``OUT/gpu_check.json``; the table goes between the markers of
``--report`` (BENCHMARKS.md). ``--toy`` runs the same parts on a CPU with toy shapes, in seconds, and writes no
report unless ``--report`` is given.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.gpu_job import ROOT, run_job

GIB = 1024**3
# What each part is expected to take on an H100 (seconds), to decide whether it still fits the budget.
ESTIMATE_GPU = {"bench": 35.0, "compile": 120.0, "job": 200.0, "calibrate": 10.0}
ESTIMATE_TOY = {"bench": 2.0, "compile": 60.0, "job": 30.0, "calibrate": 5.0}


def toggles(defaults: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Each speed setting the other way from the defaults: its name and the bench flags that set it."""
    other_attention = "sdpa" if defaults["attn"] != "sdpa" else "flash_attention_2"
    return [
        (f"attention {other_attention}", ["--attn", other_attention]),
        ("liger kernels on", ["--liger"]),
        ("embedding, norms, lm_head in bf16 (no upcast)", ["--no-upcast"]),
        ("optimizer adamw_torch_fused", ["--optimizer", "adamw_torch_fused"]),
        ("torch.compile on", ["--compile"]),
    ]


def engine_defaults(*, cuda: bool) -> dict[str, Any]:
    """What the engine's ``auto`` settings become on this machine, as bench flags."""
    from engine.config import Hyperparameters
    from engine.speed import attention

    return {"attn": attention(Hyperparameters(), cuda=cuda)}


def bench(flags: list[str]) -> dict[str, Any]:
    """One ``python -m engine bench`` configuration, in this process: the report, or why it did not run."""
    import torch

    from engine.bench import BenchmarkFailed, add_arguments, speed_settings
    from engine.bench import run as run_bench

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(flags)
    try:
        speed_settings(args, cuda=args.device != "cpu" and torch.cuda.is_available())
    except BenchmarkFailed as exc:  # this machine cannot run the setting: said before anything is built
        return {"status": "refused", "message": str(exc)}
    try:
        return {"status": "ok", "report": run_bench(args)}
    except BenchmarkFailed as exc:
        return {"status": "failed", "message": str(exc)}
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of a bench report that the table shows."""
    measured, extrapolated = report["measured"], report["extrapolated"]
    peak, peak_80 = measured["peak_memory_bytes"], extrapolated["peak_memory_bytes"]
    return {
        "tokens_per_s": measured["tokens_per_s"],
        "tokens_per_s_80": extrapolated["tokens_per_s"],
        "mfu_6n": measured["mfu_6n"],
        "mfu_4n_2n": measured["mfu_4n_2n"],
        "mfu_6n_80": extrapolated["mfu_6n"],
        "mfu_4n_2n_80": extrapolated["mfu_4n_2n"],
        "peak_memory_gib": None if peak is None else peak / GIB,
        "peak_memory_gib_80": None if peak_80 is None else peak_80 / GIB,
        "loss": [measured["loss_first"], measured["loss_last"]],
    }


def job_figures(job: dict[str, Any], reference: dict[str, Any] | None, layers: int) -> dict[str, Any]:
    """The job's tokens/s with MFU and the 80-layer extrapolation, using the batch-4 bench's fixed part and per-layer
    memory (same shapes, same tokens per step)."""
    from engine.bench import (
        TARGET_LAYERS,
        extrapolate_peak_memory,
        extrapolate_seconds_per_token,
        flops_per_token,
        mfu,
        model_parameters,
    )

    rate = job.get("tokens_per_s")
    if not rate or reference is None:
        return {}
    conditions, measured = reference["conditions"], reference["measured"]
    from engine.bench import Shape

    shape = Shape(**conditions["shape"])
    peak_tflops = conditions["peak_tflops"]
    s_80 = extrapolate_seconds_per_token(1.0 / rate, measured["fixed_part_seconds_per_token"], layers)
    rate_80 = 1.0 / s_80 if s_80 > 0 else None
    figures: dict[str, Any] = {"tokens_per_s_80": rate_80}
    for label, count, tokens in (("", layers, rate), ("_80", TARGET_LAYERS, rate_80)):
        flops = flops_per_token(model_parameters(shape, count), checkpointing=True)
        figures[f"mfu_6n{label}"] = mfu(tokens, flops["6N"], peak_tflops)
        figures[f"mfu_4n_2n{label}"] = mfu(tokens, flops["4N+2N"], peak_tflops)
    per_layer = measured["resident_bytes_per_layer"], measured["saved_activation_bytes_per_layer"]
    if job.get("peak_memory_gb") is not None and None not in per_layer:
        peak = int(job["peak_memory_gb"] * 1e9)
        figures["peak_memory_gib_80"] = extrapolate_peak_memory(peak, sum(per_layer), layers) / GIB  # type: ignore[arg-type]
    return figures


def calibrate(report_path: Path, out: Path, *, toy: bool) -> dict[str, Any]:
    """``lorapod costs calibrate REPORT --json`` in a LORAPOD_HOME of its own; a toy report is recorded with
    --force for the reference GPU (its figures stand for nothing)."""
    command = [
        sys.executable,
        "-c",
        "from tui.cli import main; main()",
        "costs",
        "calibrate",
        str(report_path),
        "--json",
    ]
    if toy:
        command += ["--force", "--gpu", "NVIDIA H100 80GB HBM3"]
    env = {**os.environ, "LORAPOD_HOME": str(out / "lorapod-home"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        return {
            "status": "failed",
            "message": (done.stderr or done.stdout)[-600:],
            "by_hand": f"lorapod costs calibrate {report_path.name}",
        }
    return {"status": "ok", "recorded": json.loads(done.stdout).get("recorded")}


class Check:
    """One run of the check: its options, its clock against the budget, and the rows it has so far."""

    def __init__(self, args: argparse.Namespace, *, cuda: bool) -> None:
        self.args, self.cuda, self.toy = args, cuda, args.toy
        self.started = time.perf_counter()
        self.budget = args.budget or (900.0 if args.toy else 450.0)
        self.estimate = ESTIMATE_TOY if args.toy else ESTIMATE_GPU
        self.defaults = engine_defaults(cuda=cuda)
        self.runs: list[dict[str, Any]] = []
        size = (
            ["--toy", "--device", "cpu", "--steps", "1", "--warmup", "1"]
            if args.toy
            else ["--steps", "5", "--warmup", "2"]
        )
        self.common = [*size, "--seq-len", "256" if args.toy else "4096", "--layers", str(args.layers)]

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def bench_run(self, setting: str, batch: int, flags: list[str]) -> dict[str, Any] | None:
        """One bench configuration as a row (run, refused or skipped); its report when it ran."""
        cost = self.estimate["compile" if "--compile" in flags else "bench"] * (2 if batch > 1 else 1)
        row: dict[str, Any] = {"setting": setting, "batch": batch, "flags": flags}
        self.runs.append(row)
        if self.toy and "--compile" in flags:
            row |= {"status": "skipped", "message": "--toy: compiling on a CPU takes minutes"}
        elif self.toy and flags and batch == 1:
            row |= {"status": "skipped", "message": "--toy: settings are switched at batch 4 only"}
        elif self.left() < cost + self.estimate["calibrate"]:
            row |= {"status": "skipped", "message": f"time budget: {self.left():.0f} s left"}
        else:
            print(f"gpu_check: bench {setting}, batch {batch}", file=sys.stderr, flush=True)
            flags = [*self.common, "--batch", str(batch), "--attn", self.defaults["attn"], *flags, "--json"]
            result = bench(flags)
            row |= {"status": result["status"], "message": result.get("message", "")}
            if result["status"] == "ok":
                row |= summary(result["report"])
                return dict(result["report"])
        return None

    def job(self, out: Path, reference: dict[str, Any] | None) -> dict[str, Any]:
        if self.left() < self.estimate["job"]:
            return {"status": "skipped", "message": f"time budget: {self.left():.0f} s left"}
        print("gpu_check: engine job", file=sys.stderr, flush=True)
        copies = 2 if self.toy else 60
        timeout = max(self.left() - 60, 30)
        job = run_job(out, toy=self.toy, layers=self.args.layers, cuda=self.cuda, copies=copies, timeout=timeout)
        job["status"] = "ok" if job["completed"] else "failed"
        return job | job_figures(job, reference, self.args.layers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="toy shapes on a CPU: the same path in seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check")
    parser.add_argument("--report", type=Path, help="markdown file whose gpu_check section is rewritten")
    parser.add_argument("--budget", type=float, help="seconds for all parts (default 450; --toy 900)")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers K (default 4)")
    args = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not args.toy
    check = Check(args, cuda=cuda)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    check.bench_run("engine defaults", 1, [])
    reference = check.bench_run("engine defaults", 4, [])
    if reference is not None:
        (out / "bench-batch4.json").write_text(json.dumps(reference, indent=2), encoding="utf-8")
    job = check.job(out, reference)
    for batch in (4, 1):
        for setting, flags in toggles(check.defaults):
            check.bench_run(setting, batch, flags)
    calibration: dict[str, Any] = {"status": "skipped", "message": "no batch-4 bench report"}
    if reference is not None:
        calibration = calibrate(out / "bench-batch4.json", out, toy=args.toy)

    device = (reference or {}).get("conditions", {}).get("device_name")
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "toy": args.toy,
        "device": device or (torch.cuda.get_device_name() if cuda else "CPU"),
        "layers": args.layers,
        "engine_defaults": check.defaults,
        "bench": check.runs,
        "job": job,
        "calibrate": calibration,
        "seconds": round(time.perf_counter() - check.started, 1),
    }
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    from benchmarks.gpu_report import markdown, write_section

    text = markdown(result)
    (out / "gpu_check.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    if args.report is not None:
        write_section(args.report, text)
    ok = job.get("status") == "ok" and reference is not None and calibration.get("status") == "ok"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

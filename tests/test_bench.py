"""`python -m engine bench`: both training paths run on a CPU at toy sizes, and its arithmetic is right."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.bench import (
    LLAMA3_70B,
    TOY,
    add_arguments,
    extrapolate_peak_memory,
    extrapolate_seconds_per_token,
    flops_per_token,
    layer_parameters,
    mfu,
    model_parameters,
    peak_tflops_for,
)
from engine.bench_ranks import bench_argv
from engine.bench_report import format_report
from tests.bench_helpers import H100
from tests.conftest import ROOT, run_cli

PLAIN_SPEED = ["--attn", "eager", "--loss", "full", "--optimizer", "adamw_torch_fused"]
TOY_RUN = ["--toy", "--device", "cpu", "--steps", "2", "--json"]
RUNS = {
    "4bit": TOY_RUN,
    "plain": [*TOY_RUN, "--no-4bit", "--no-activation-checkpointing", "--peak-tflops", "100", *PLAIN_SPEED],
}


@pytest.fixture(scope="module")
def reports() -> dict[str, dict[str, Any]]:
    """Both toy runs, started together (each spends most of its time importing the training stack)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # toy sizes gain nothing from threads; two runs share the CPUs
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "engine", "bench", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in RUNS.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=180)
        assert process.returncode == 0, f"{name}: {stderr[-3000:]}"
        results[name] = json.loads(stdout)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_toy_run_reports_throughput_extrapolation_and_conditions(reports: dict[str, Any], name: str) -> None:
    report = reports[name]
    conditions, measured, extrapolated = report["conditions"], report["measured"], report["extrapolated"]
    assert measured["tokens_per_s"] > 0
    assert measured["loss_first"] == pytest.approx(8.3, abs=0.5)  # ln(4096) = 8.32: random weights
    assert measured["parameters"] == model_parameters(TOY, 4) == 770_624
    assert extrapolated["layers"] == 80
    assert extrapolated["parameters"] == model_parameters(TOY, 80)
    assert extrapolated["tokens_per_s"] > 0
    assert extrapolated["peak_memory_is_extrapolated"] is True
    s_k = 1 / measured["tokens_per_s"]
    s_80 = extrapolate_seconds_per_token(s_k, measured["fixed_part_seconds_per_token"], 4)
    assert extrapolated["tokens_per_s"] == pytest.approx(1 / s_80)
    for row in (measured, extrapolated):
        assert {"mfu_6n", "mfu_4n_2n", "peak_memory_bytes"} <= row.keys()
    assert measured["peak_memory_bytes"] is None  # no allocator figures on a CPU
    assert conditions["device"] == "cpu"
    assert conditions["dtype"] == "bfloat16"
    assert (conditions["layers"], conditions["seq_len"], conditions["batch"], conditions["steps"]) == (4, 256, 1, 2)
    assert conditions["toy"] is True
    assert set(conditions["versions"]) == {"torch", "transformers", "peft", "trl", "bitsandbytes"}
    assert (conditions["liger_kernel"], conditions["torch_compile"]) == (False, False)
    assert set(report["formulas"]) >= {"flops_per_token_6n", "flops_per_token_4n_2n", "seconds_per_token_80"}


@pytest.mark.slow
def test_4bit_run_quantizes_and_has_no_mfu_without_a_peak(reports: dict[str, Any]) -> None:
    report = reports["4bit"]
    conditions = report["conditions"]
    assert conditions["load_in_4bit"] is True
    assert conditions["quantization"] == "nf4, double quantization, bf16 compute"
    assert conditions["fp32_embedding_norms_head"] is True  # as the engine's QLoRA path does
    assert conditions["optimizer"] == "adamw_torch"  # the paged 8-bit one needs CUDA
    assert (conditions["attention"], conditions["loss"]) == ("sdpa", "TRL chunked log-probabilities")
    assert conditions["activation_checkpointing"] is True
    assert conditions["peak_tflops"] is None
    for row in (report["measured"], report["extrapolated"]):
        assert row["mfu_6n"] is None
        assert row["mfu_4n_2n"] is None


@pytest.mark.slow
def test_plain_run_with_a_peak_reports_both_mfu_conventions(reports: dict[str, Any]) -> None:
    report = reports["plain"]
    conditions, measured = report["conditions"], report["measured"]
    assert conditions["load_in_4bit"] is False
    assert conditions["quantization"] is None
    assert conditions["activation_checkpointing"] is False
    assert (conditions["peak_tflops"], conditions["peak_tflops_source"]) == (100.0, "--peak-tflops")
    assert (conditions["attention"], conditions["optimizer"]) == ("eager", "adamw_torch_fused")
    assert conditions["loss"] == "full logits, cross-entropy"
    expected = measured["tokens_per_s"] * 6 * 770_624 / 100e12
    assert measured["mfu_6n"] == pytest.approx(expected)
    assert measured["mfu_4n_2n"] == pytest.approx(expected * 4 / 6)  # no recomputation without checkpointing
    assert report["extrapolated"]["mfu_6n"] > 0


@pytest.mark.slow
def test_table_shows_both_lines_and_the_formulas(reports: dict[str, Any]) -> None:
    table = format_report(reports["plain"])
    lines = table.splitlines()
    assert any(line.split()[:2] == ["measured", "4"] for line in lines)
    assert any(line.split()[:2] == ["extrapolated", "80"] for line in lines)
    assert "(TOY shapes)" in table
    assert "s_fixed + 80 × (s_K − s_fixed) ÷ K" in table
    assert "torch 2.13" in table


def test_gpu_only_flags_are_refused_on_a_cpu_naming_the_flags() -> None:
    from engine.bench import BenchmarkFailed, speed_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--toy", "--attn", "flash_attention_2", "--liger"])
    with pytest.raises(BenchmarkFailed) as raised:
        speed_settings(args, cuda=False)
    assert str(raised.value).splitlines() == [
        "--attn: flash_attention_2 needs a CUDA GPU and this machine has none; use --attn sdpa",
        "--liger: Liger's kernels are Triton kernels for CUDA GPUs and this machine has none; leave out --liger",
    ]
    assert speed_settings(parser.parse_args(["--toy", "--compile"]), cuda=False).torch_compile is True


def test_llama3_70b_parameter_count() -> None:
    # q, o: 8192 × 8192 each; k, v: 8192 × 1024 each; gate, up, down: 8192 × 28672 each; two norms of 8192
    per_layer = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    assert layer_parameters(LLAMA3_70B) == per_layer == 855_654_400
    # embedding and untied lm_head: 128256 × 8192 each; final norm 8192
    assert model_parameters(LLAMA3_70B, 80) == 80 * per_layer + 2 * 128_256 * 8192 + 8192 == 70_553_706_496
    assert model_parameters(LLAMA3_70B, 4) == 5_523_972_096


def test_toy_shapes_keep_every_linear_output_a_multiple_of_32() -> None:
    widths = [TOY.heads * TOY.head_dim, TOY.kv_heads * TOY.head_dim, TOY.intermediate, TOY.hidden]
    assert all(width % 32 == 0 for width in widths)


def test_flops_per_token_in_both_conventions() -> None:
    n = model_parameters(LLAMA3_70B, 80)
    with_recompute = flops_per_token(n, checkpointing=True)
    assert with_recompute["6N"] == 6 * 70_553_706_496 == pytest.approx(423.32e9, rel=1e-5)
    assert with_recompute["4N+2N"] == with_recompute["6N"]  # 4N + 2N for the recomputed forward
    without = flops_per_token(n, checkpointing=False)
    assert without["4N+2N"] / without["6N"] == pytest.approx(2 / 3)


def test_mfu_against_the_peak() -> None:
    # 786 tokens/s (the best public 70B QLoRA figure per H100) at 6N on an H100 SXM: 33.6%
    assert mfu(786, 6 * 70_553_706_496, 989) == pytest.approx(786 * 423.322238976e9 / 989e12)
    assert mfu(786, 6 * 70_553_706_496, 989) == pytest.approx(0.3364, abs=1e-4)
    assert mfu(786, 1e9, None) is None
    assert mfu(None, 1e9, 989) is None


def test_extrapolation_to_80_layers() -> None:
    # 4 layers at 1 ms/token of which 0.2 ms is outside the layers: 0.2 ms + 80 × 0.8 ms ÷ 4 = 16.2 ms
    assert extrapolate_seconds_per_token(1e-3, 2e-4, 4) == pytest.approx(16.2e-3)
    assert extrapolate_seconds_per_token(1e-3, 2e-4, 80) == pytest.approx(1e-3)
    gib = 1024**3
    assert extrapolate_peak_memory(10 * gib, gib // 2, 4) == 48 * gib  # 10 GiB + 76 × 0.5 GiB


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA L4", None),
    ],
)
def test_peak_by_device_name(name: str, tflops: float | None) -> None:
    assert peak_tflops_for(name) == tflops


def test_options_and_their_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.layers, args.seq_len, args.batch, args.steps, args.device) == (4, None, 1, 10, "auto")
    assert args.load_in_4bit and args.checkpointing and args.upcast and not args.toy
    flags = parser.parse_args(["--no-4bit", "--no-activation-checkpointing", "--layers", "8", "--seq-len", "2048"])
    assert (flags.load_in_4bit, flags.checkpointing, flags.layers, flags.seq_len) == (False, False, 8, 2048)
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "0"])


def test_importing_the_options_loads_no_torch() -> None:
    code = "import sys, engine.bench; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_two_ranks_are_timed_against_one_and_the_estimate_rests_on_their_speed_up(
    tmp_path: Path, lorapod_home: Path
) -> None:
    command = [sys.executable, "-m", "engine", "bench", "--toy", "--device", "cpu", "--layers", "1", "--seq-len", "64",
               "--steps", "2", "--warmup", "1", "--gpus", "2", "--json"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    one, two = report["ranks"]
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert two["tokens_per_step"] == 2 * one["tokens_per_step"] == 2 * 64  # each rank its own micro-batch
    efficiency = two["tokens_per_s"] / (2 * one["tokens_per_s"])
    assert report["conditions"]["gpus"] == 2
    assert report["conditions"]["scaling_efficiency"] == pytest.approx(efficiency, abs=1e-4)

    path = tmp_path / "bench-2.json"
    path.write_text(result.stdout, encoding="utf-8")
    assert run_cli("costs", "calibrate", str(path), "--force", "--gpu", H100).exit_code == 0
    human = run_cli("estimate", "--tokens", "1000000", "--gpu-count", "2")
    assert human.exit_code == 0, human.output
    speedup = round(2 * report["conditions"]["scaling_efficiency"], 2)
    assert f"speed-up {speedup:g}× on 2 GPUs, measured on 2 × CPU" in human.stdout
    assert "an assumption" not in human.stdout


def test_a_gpus_run_gives_each_run_the_same_options_as_json() -> None:
    assert bench_argv(["--toy", "--gpus", "2", "--steps", "3"]) == ["--toy", "--steps", "3", "--json"]
    assert bench_argv(["--gpus=4", "--json"]) == ["--json"]

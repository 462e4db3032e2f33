"""``python -m engine bench --gpus N``: the same benchmark on one rank, then on N, in one run: the speed-up of N GPUs.

Each rank trains the benchmark's model on its own micro-batch, its LoRA gradients reduced by PyTorch's
DistributedDataParallel, as the engine's Trainer does for a job with ``gpu_count`` N: one GPU per rank (NCCL),
or CPU ranks through gloo where there is no GPU (how the tests run it). N ranks are started by
``torch.distributed.run``, as a job's are (engine.distributed).

The report is the one-rank report, with both runs in ``ranks`` (seconds and tokens per optimizer step) and two
conditions that ``lorapod costs calibrate`` records and ``lorapod estimate`` uses for that many GPUs:
``gpus`` (N) and ``scaling_efficiency`` (tokens/s on N ranks ÷ N × tokens/s on one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from engine import EngineError, distributed


class RanksFailed(EngineError):
    """One of the benchmark's runs failed; its own message is kept."""


def add_arguments(parser: argparse.ArgumentParser, positive: Any) -> None:
    parser.add_argument(
        "--gpus", type=positive, default=1, help="also time N ranks (one GPU each; CPU ranks without GPUs)"
    )


def bench_argv(argv: list[str]) -> list[str]:
    """``argv`` (this bench's own arguments) without ``--gpus``, with ``--json``: what each run is given."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            kept.append(arg)
    return kept if "--json" in kept else [*kept, "--json"]


def _run(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-5:]
        raise RanksFailed(f"{' '.join(command[2:6])}… exited {result.returncode}: " + " | ".join(tail))
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def measure(argv: list[str], gpus: int) -> dict[str, Any]:
    """The one-rank report with the N-rank run beside it (the module docstring says what is added)."""
    args = bench_argv(argv)
    env = {**os.environ}
    env.pop(distributed.WORLD_ENV, None)
    one = _run([sys.executable, "-m", "engine", "bench", *args], env)
    threads = env.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // gpus))
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc-per-node", str(gpus), "-m", "engine", "bench", *args,
    ]  # fmt: skip
    many = _run(launch, {**env, distributed.WORLD_ENV: str(gpus), "OMP_NUM_THREADS": threads})
    return combine(one, many, gpus)


def combine(one: dict[str, Any], many: dict[str, Any], gpus: int) -> dict[str, Any]:
    """``one`` with ``ranks`` and the scaling conditions, from the one-rank and the N-rank reports."""
    rows = []
    for ranks, report in ((1, one), (gpus, many)):
        tokens = report["conditions"]["tokens_per_step"] * ranks  # each rank its own micro-batches
        seconds = report["measured"]["seconds_per_step"]
        rows.append(
            {"ranks": ranks, "seconds_per_step": seconds, "tokens_per_step": tokens, "tokens_per_s": tokens / seconds}
        )
    efficiency = rows[1]["tokens_per_s"] / (gpus * rows[0]["tokens_per_s"])
    conditions = {**one["conditions"], "gpus": gpus, "scaling_efficiency": round(efficiency, 4)}
    return {**one, "conditions": conditions, "ranks": rows}


def wrap(model: Any, device: Any) -> Any:
    """``model`` in DistributedDataParallel when this process is one of several ranks, else as it is."""
    if distributed.world_size() <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # Buffers (rotary tables) are the same on every rank: broadcasting them each step would only cost time.
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def format_ranks(report: dict[str, Any]) -> list[str]:
    """The table's lines for a ``--gpus`` run; none without one."""
    if "ranks" not in report:
        return []
    lines = ["", f"  {'ranks':>7}{'s/step':>10}{'tokens/step':>13}{'tokens/s':>11}"]
    for row in report["ranks"]:
        seconds, tokens, rate = row["seconds_per_step"], row["tokens_per_step"], row["tokens_per_s"]
        lines.append(f"  {row['ranks']:>7}{seconds:>10.3f}{tokens:>13,}{rate:>11,.0f}")
    c = report["conditions"]
    lines.append(f"  scaling efficiency on {c['gpus']} ranks: {c['scaling_efficiency']:.0%} of {c['gpus']}× one rank")
    return lines

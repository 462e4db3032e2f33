"""One rank against two on CPU: ``python -m engine run`` with gpu_count 1 and 2 (two gloo ranks under
torch.distributed.run), the same per-rank batch, timed in one run of the suite.

Each rank trains 2 packed sequences of up to 512 tokens per optimizer step (the demo model, the sample data), so
two ranks train twice the tokens per step. Seconds per step are the medians of the gaps between consecutive
steps' metrics events (the first ``WARMUP`` steps left out); tokens per step come from the trainer's own count
(``num_tokens`` in the final checkpoint's log history, summed over ranks).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "brightrun-sample.json"
WARMUP = 2
ROUNDS = 2  # 1 rank, 2 ranks, then again: a slow minute of a shared machine falls on both alike
THREADS = 1
SETTINGS = [
    "max_seq_length=512", "batch_size=2", "gradient_accumulation_steps=1", "num_epochs=4", "log_every_steps=1",
    "save_steps=1000", "eval_every_steps=1000", "eval_generations=0", "learning_rate=5e-3",
]  # fmt: skip


def _job(model: Path, ranks: int, folder: Path) -> dict[str, float]:
    import presets

    spec = presets.get("smoke").to_spec(str(SAMPLE), [f"base_model={model}", *SETTINGS, f"gpu_count={ranks}"])
    spec_path = folder / f"spec-{ranks}.json"
    spec_path.write_text(spec.model_dump_json(), encoding="utf-8")
    workdir = folder / f"job-{ranks}"
    # One thread per rank, and per process alike: the only difference between the runs is the number of ranks.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(THREADS)}
    command = [sys.executable, "-m", "engine", "run", "--spec", str(spec_path), "--workdir", str(workdir)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    events = [json.loads(line) for line in (workdir / "events.jsonl").read_text().splitlines()]
    elapsed = [e["elapsed"] for e in events if e["type"] == "metrics" and e.get("loss") is not None]
    final = max(workdir.glob("checkpoints/checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    history = json.loads((final / "trainer_state.json").read_text())["log_history"]
    tokens = [h["num_tokens"] for h in history if "num_tokens" in h and "loss" in h]
    return {
        "seconds_per_step": statistics.median(b - a for a, b in pairwise(elapsed[WARMUP:])),
        "tokens_per_step": statistics.median(b - a for a, b in pairwise(tokens)),
        "steps": len(elapsed),
    }


def run() -> list[dict[str, Any]]:
    from engine.demo import build_demo_model, dataset_chats, dataset_texts

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_demo_model(folder / "model", dataset_texts(SAMPLE), dataset_chats(SAMPLE))
        rounds = [{ranks: _job(folder / "model", ranks, folder) for ranks in (1, 2)} for _ in range(ROUNDS)]
    # The faster round of each: the one less slowed by other work on the machine.
    figures = {r: min((each[r] for each in rounds), key=lambda f: f["seconds_per_step"]) for r in (1, 2)}
    one, two = figures[1], figures[2]
    for ranks, f in figures.items():
        conditions = (
            f"{ranks} rank{'s' * (ranks > 1)} on CPU ({'gloo, ' if ranks > 1 else ''}{THREADS} thread each), "
            f"2 × ≤512-token packed sequences per rank per step, median of {f['steps'] - WARMUP - 1} steps, the "
            f"faster of {ROUNDS} rounds"
        )
        results.append(
            {"name": f"{ranks} rank{'s' * (ranks > 1)}: s/step", "value": round(f["seconds_per_step"], 3),
             "unit": "s/step", "target": None, "conditions": conditions}
        )  # fmt: skip
        results.append(
            {"name": f"{ranks} rank{'s' * (ranks > 1)}: tokens/step", "value": round(f["tokens_per_step"]),
             "unit": "tokens/step", "target": None, "conditions": conditions}
        )  # fmt: skip
    speedup = (two["tokens_per_step"] / two["seconds_per_step"]) / (one["tokens_per_step"] / one["seconds_per_step"])
    results.append(
        {"name": "2 ranks over 1: tokens/s", "value": round(speedup, 2), "unit": "×", "target": None,
         "conditions": f"the figures above, same run, on {os.cpu_count()} CPUs shared with other work"}
    )  # fmt: skip
    return results

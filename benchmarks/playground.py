"""Playground benchmarks on the demo model: how long the local model server takes to start, and the time from a
prompt's request to its first streamed piece, for the base model and for the adapter, as ``lorapod chat`` and
the Try screen see them (through the HTTP client, from the subprocess)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from remote.playground import LocalPlayground, Reply, Side
from tests.playground_helpers import finished_workdir

PROMPTS = [
    "How should I start saving for retirement?",
    "I feel anxious about my debt. Where do I begin?",
    "Is it better to pay off my mortgage early or invest?",
    "What is an emergency fund and how big should it be?",
    "My partner and I argue about money. Any advice?",
]
ROUNDS = 4  # each prompt this many times: 20 prompts, each to both sides
MAX_NEW_TOKENS = 32


def _first_piece_ms(playground: LocalPlayground, prompt: str, side: Side) -> tuple[float, Reply]:
    start = time.perf_counter()
    first: float | None = None
    reply: Reply | None = None
    for item in playground.client.stream([{"role": "user", "content": prompt}], side, max_new_tokens=MAX_NEW_TOKENS):
        if isinstance(item, Reply):
            reply = item
        elif first is None:
            first = time.perf_counter() - start
    assert reply is not None and first is not None, f"the {side} model gave no text"
    return first * 1000, reply


def _figure(name: str, values: list[float], unit: str, target: str, conditions: str) -> dict[str, Any]:
    spread = f"; p95 {statistics.quantiles(values, n=20)[-1]:.1f}" if len(values) >= 2 else ""
    return {
        "name": name, "value": round(statistics.median(values), 1), "unit": unit, "target": target,
        "conditions": conditions + spread,
    }  # fmt: skip


def run() -> list[dict[str, Any]]:
    from engine.demo import build_demo_model, dataset_chats, dataset_texts, sample_dataset

    with tempfile.TemporaryDirectory(prefix="lorapod-bench-playground-") as folder:
        root = Path(folder)
        sample = sample_dataset()
        model = build_demo_model(root / "tiny-llama", dataset_texts(sample), dataset_chats(sample))
        workdir = finished_workdir(root / "job", model)
        start = time.perf_counter()
        playground = LocalPlayground.start(workdir.root, root / "models")
        started_s = time.perf_counter() - start
        try:
            first: dict[str, list[float]] = {"base": [], "adapter": []}
            rates: list[float] = []
            for _ in range(ROUNDS):
                for prompt in PROMPTS:
                    for side in ("base", "adapter"):
                        ms, reply = _first_piece_ms(playground, prompt, side)  # type: ignore[arg-type]
                        first[side].append(ms)
                        if reply.tokens > 1 and reply.seconds and reply.first_token_s is not None:
                            rates.append((reply.tokens - 1) / (reply.seconds - reply.first_token_s))
        finally:
            playground.close()
    asked = f"{len(PROMPTS) * ROUNDS} prompts, greedy, max {MAX_NEW_TOKENS} new tokens, CPU, demo model + LoRA r=8"
    return [
        {
            "name": "playground start (local)",
            "value": round(started_s, 1),
            "unit": "s",
            "target": "< 30",
            "conditions": "spawning `python -m engine playground` to its ready line: imports, model and adapter load",
        },
        _figure(
            "playground time to first token, base",
            first["base"],
            "ms (median)",
            "< 1000",
            f"request to first streamed piece over HTTP, adapter disabled; {asked}",
        ),
        _figure(
            "playground time to first token, adapter",
            first["adapter"],
            "ms (median)",
            "< 1000",
            f"request to first streamed piece over HTTP; {asked}",
        ),
        _figure("playground decode rate", rates, "tokens/s (median)", "—", f"after the first token; {asked}"),
    ]

"""Evaluation benchmarks: the time the pairwise judge and the forgetting check add to a job.

Measured on this machine's CPU at demo size — the demo model with a LoRA adapter on the sample's conversations,
held-out replies generated in batches, the base model judging them in both orders, lm-evaluation-harness on a
six-question local task — and counted in tokens. For a 70B job on one H100 the same work is projected from the
tokens it generates and reads: each decode step of a batch reads the whole 4-bit model once (memory-bound), and
prompts (prefill) run at a stated share of the GPU's bf16 FLOPs. Those are lower bounds, stated as such:
bitsandbytes' NF4 kernels decode well below the memory bandwidth, so a real job takes longer.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from engine.config import RETENTION_TASKS

PROMPTS = 8  # held-out prompts at demo size
MAX_NEW_TOKENS = 48  # the smoke preset's bound
BATCH = 8
# The 70B projection: Llama 3 70B in NF4 (≈0.55 bytes a parameter with its constants) on one H100 SXM.
PARAMETERS_70B = 70.55e9
WEIGHT_BYTES_70B = PARAMETERS_70B * 0.55
HBM_BYTES_PER_S = 3.35e12
BF16_FLOPS = 989e12
PREFILL_MFU = 0.4
# The balanced job's evaluation: ~80 held-out prompts (the 242-conversation file, eval_fraction 0.1, its last
# replies), replies up to 256 tokens, judge prompts of ~1,800 tokens (rubric + system prompt + 6 turns + 2 replies)
# and verdicts of ~120 tokens; retention: 5 tasks × 200 questions × 4 choices of ~150 tokens each.
JOB_PROMPTS, REPLY_TOKENS, CONTEXT_TOKENS, JUDGE_PROMPT_TOKENS, VERDICT_TOKENS = 80, 256, 1_500, 1_800, 120
RETENTION_REQUESTS, RETENTION_TOKENS = len(RETENTION_TASKS) * 200 * 4, 150


def _demo() -> tuple[Any, Any, list[Any], Path]:
    from engine.demo import build_demo_model, dataset_chats, dataset_texts
    from tests.engine_helpers import SAMPLE
    from tests.judge_helpers import demo_items, demo_peft_model

    folder = Path(tempfile.mkdtemp(prefix="lorapod-bench-eval-"))
    build_demo_model(folder / "tiny-llama", dataset_texts(SAMPLE), dataset_chats(SAMPLE))
    model, tokenizer = demo_peft_model(folder / "tiny-llama")
    return model, tokenizer, demo_items(tokenizer, count=PROMPTS), folder


def _timed(call: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def _projection(decode_steps: float, prefill_tokens: float) -> float:
    """Seconds on one H100 for a 70B model: decode steps at HBM bandwidth, prefill at PREFILL_MFU of bf16."""
    return decode_steps * WEIGHT_BYTES_70B / HBM_BYTES_PER_S + prefill_tokens * 2 * PARAMETERS_70B / (
        BF16_FLOPS * PREFILL_MFU
    )


def run() -> list[dict[str, Any]]:
    from engine.evaluation import answer_held_out, model_judge
    from engine.judge import judge_pairs
    from engine.retention import retention_check
    from presets.rubrics import load_rubric

    model, tokenizer, items, folder = _demo()
    criteria = load_rubric("default")
    kwargs = {"max_prompts": PROMPTS, "max_new_tokens": MAX_NEW_TOKENS, "batch_size": BATCH}
    replies_s, (pairs, _) = _timed(lambda: answer_held_out(model, tokenizer, items, "cpu", **kwargs))
    ask = model_judge(model, tokenizer, "cpu", batch_size=BATCH, stop=lambda: False)
    judge_s, judged = _timed(lambda: judge_pairs(pairs, criteria, ask, judge="base model", batch_size=BATCH // 2))
    reply_tokens = sum(len(tokenizer(p[side])["input_ids"]) for p in pairs for side in ("base", "adapter"))
    verdict_tokens = sum(len(tokenizer(r["raw"])["input_ids"]) for r in judged["records"])
    task = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "retention"
    local = folder / "tiny_finance.yaml"
    local.write_text((task / "tiny_finance.yaml").read_text().replace("DATA_FILE", str(task / "tiny_finance.jsonl")))
    retention_s, _ = _timed(
        lambda: retention_check(model, tokenizer, [str(local)], limit=None, batch_size=BATCH, device="cpu")
    )
    demo = f"demo model (CPU), {len(pairs)} held-out prompts of the sample, batches of {BATCH}"
    demo += f", ≤ {MAX_NEW_TOKENS} new tokens"
    # 70B on one H100: decode steps are batches × tokens; judge batches hold BATCH // 2 pairs (both orders).
    reply_steps = 2 * (JOB_PROMPTS / BATCH) * REPLY_TOKENS
    judge_steps = (2 * JOB_PROMPTS / BATCH) * VERDICT_TOKENS
    unbatched_steps = 2 * JOB_PROMPTS * REPLY_TOKENS
    bound = (
        f"lower bound: decode at {HBM_BYTES_PER_S / 1e12:.2f} TB/s reading {WEIGHT_BYTES_70B / 1e9:.0f} GB of NF4 "
        f"weights a step, prefill at {PREFILL_MFU:.0%} of 989 TFLOPs bf16"
    )
    return [
        _row("held-out replies, base and adapter (demo)", replies_s, "s", f"{demo}; {reply_tokens} tokens generated"),
        _row(
            "pairwise judge, both orders (demo)", judge_s, "s",
            f"{demo}; {len(judged['records'])} verdicts, {verdict_tokens} tokens generated; the base model judging",
        ),
        _row(
            "forgetting check, base and adapter (demo)", retention_s, "s",
            "lm-evaluation-harness 0.4.13 on the six-question local task (tests/fixtures/retention), 18 "
            "loglikelihood requests per model",
        ),
        _row(
            "projected 70B: held-out replies", _projection(reply_steps, 2 * JOB_PROMPTS * CONTEXT_TOKENS) / 60, "min",
            f"{JOB_PROMPTS} prompts × 2 models × ≤ {REPLY_TOKENS} tokens in batches of {BATCH}: {reply_steps:,.0f} "
            f"decode steps; {bound}",
        ),
        _row(
            "projected 70B: pairwise judge", _projection(judge_steps, 2 * JOB_PROMPTS * JUDGE_PROMPT_TOKENS) / 60,
            "min",
            f"{2 * JOB_PROMPTS} judge prompts of ~{JUDGE_PROMPT_TOKENS:,} tokens, verdicts ≤ {VERDICT_TOKENS} "
            f"tokens: {judge_steps:,.0f} decode steps; {bound}",
        ),
        _row(
            "projected 70B: forgetting check", _projection(0, 2 * RETENTION_REQUESTS * RETENTION_TOKENS) / 60, "min",
            f"{len(RETENTION_TASKS)} default tasks × 200 questions × 4 choices × 2 models of ~{RETENTION_TOKENS} "
            f"tokens (prefill only); {bound}",
        ),
        _row(
            "projected 70B: held-out replies one at a time", _projection(unbatched_steps, 0) / 60, "min",
            f"unbatched ({unbatched_steps:,} decode steps, prefill left out): why generation is batched; {bound}",
        ),
    ]  # fmt: skip


def _row(name: str, value: float, unit: str, conditions: str) -> dict[str, Any]:
    return {"name": name, "value": round(value, 2), "unit": unit, "conditions": conditions}

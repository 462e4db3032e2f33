"""The GPU check's engine job: a Llama-3-70B-shaped model of K layers with random weights, written here, trained
by ``python -m engine run`` through prepare → train → evaluate → package at the balanced preset's batch and length.

Nothing is downloaded: the tokenizer is the demo tokenizer (trained on the sample's text), the model has 70B's
widths and vocabulary but K decoder layers, and the dataset is the sample's conversations, copied until it fills
enough micro-steps to time.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.bench import LLAMA3_70B, TOY, Shape

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "brightrun-sample.json"


def write_model(target: Path, shape: Shape, layers: int, *, cuda: bool) -> float:
    """A K-layer model of ``shape`` with random bf16 weights and the demo tokenizer in ``target``; seconds taken."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from engine.demo import build_demo_tokenizer, dataset_texts

    start = time.perf_counter()
    build_demo_tokenizer(dataset_texts(SAMPLE), target)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(target)
    config = LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        rms_norm_eps=shape.rms_norm_eps, rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta},
        max_position_embeddings=8192, tie_word_embeddings=shape.tied_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    # Made where it will be trained, in bf16: 70B's embedding and lm_head alone are 2 × 1.05 B parameters.
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(target)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return time.perf_counter() - start


def write_dataset(target: Path, copies: int, *, first: int | None = None) -> Path:
    """The sample's conversations (its ``first`` ones, or all) ``copies`` times over, each copy its own id."""
    document = json.loads(SAMPLE.read_text(encoding="utf-8"))
    conversations = []
    for copy_number in range(copies):
        for conversation in document["conversations"][:first]:
            twin = copy.deepcopy(conversation)
            meta = twin["conversation_metadata"]
            meta["conversation_id"] = f"{meta['conversation_id']}-{copy_number}"
            conversations.append(twin)
    document["conversations"] = conversations
    target.write_text(json.dumps(document), encoding="utf-8")
    return target


def job_overrides(model_dir: Path, *, toy: bool) -> list[str]:
    """The balanced preset as it stands (batch 4 × 4096, 4-bit, checkpointing, auto attention), one epoch, every
    optimizer step logged (accumulation 1, so a few minutes give several timed steps), one short generation."""
    overrides = [
        f"base_model={model_dir}",
        "num_epochs=1",
        "gradient_accumulation_steps=1",
        "log_every_steps=1",
        "status_every_steps=5",
        "save_steps=100000",
        "eval_every_steps=100000",
        "eval_fraction=0.3" if toy else "eval_fraction=0.05",
        "eval_generations=1",
        "max_new_tokens=8",
    ]
    if toy:  # the same path at CPU size: rows of 512 tokens
        overrides.append("max_seq_length=512")
    return overrides


def run_job(out: Path, *, toy: bool, layers: int, cuda: bool, copies: int, timeout: float) -> dict[str, Any]:
    """Write the model and the data, run the job, and read what its events say."""
    from presets import get as preset

    shape = TOY if toy else LLAMA3_70B
    model_dir = out / "model"
    written = write_model(model_dir, shape, layers, cuda=cuda)
    first = 3 if toy else None  # the toy job: two micro-steps of training, two held-out conversations
    data = write_dataset(out / "dataset.json", copies, first=first)
    spec = preset("balanced").to_spec(str(data), job_overrides(model_dir, toy=toy))
    spec = spec.model_copy(update={"job_id": "00000000-0000-4000-8000-00000000c0de", "name": "gpu check"})
    spec_path = out / "spec.json"
    spec_path.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    workdir = out / "job"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "engine", "run", "--spec", str(spec_path), "--workdir", str(workdir)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        returncode, tail = done.returncode, (done.stdout + done.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        returncode, tail = None, f"stopped after {timeout:.0f} s (the check's time budget)"
    result = read_events(workdir / "events.jsonl")
    hp = spec.hyperparameters
    return result | {
        "returncode": returncode,
        "output_tail": tail if returncode != 0 else "",
        "seconds": round(time.perf_counter() - start, 1),
        "model_written_seconds": round(written, 1),
        "layers": layers,
        "batch": hp.batch_size,
        "seq_len": hp.max_seq_length,
        "tokens_per_step": hp.batch_size * hp.max_seq_length,
        "conversations": copies * (first or 7),
    }


def read_events(path: Path) -> dict[str, Any]:
    """Stages reached, the speed-settings line, tokens/s (median after the first timed step) and peak memory."""
    items = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.endswith("}"):
                items.append(json.loads(line))
    stages = [e["stage"] for e in items if e.get("type") == "stage"]
    metrics = [e for e in items if e.get("type") == "metrics" and e.get("loss") is not None]
    rates = [e["tokens_per_second"] for e in metrics if e.get("tokens_per_second")]
    memory = [e["gpu_memory_gb"] for e in metrics if e.get("gpu_memory_gb") is not None]
    logs = [e.get("message", "") for e in items if e.get("type") == "log"]
    errors = [e.get("message", "") for e in items if e.get("type") == "error"]
    return {
        "stages": stages,
        "completed": bool(stages) and stages[-1] == "completed",
        "speed_settings": next((m for m in logs if m.startswith("speed settings:")), None),
        "optimizer_steps": len(metrics),
        "tokens_per_s": statistics.median(rates) if rates else None,
        "peak_memory_gb": max(memory) if memory else None,
        "error": errors[0] if errors else None,
    }

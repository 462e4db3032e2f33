"""Helpers for evaluation tests: the demo model with a (random, non-zero) LoRA adapter, and held-out items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.engine_helpers import SAMPLE


def demo_peft_model(model_dir: Path) -> tuple[Any, Any]:
    """The demo model wrapped in a LoRA adapter whose weights differ from the base's (so replies may differ)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(base, config), tokenizer


def demo_items(tokenizer: Any, count: int) -> list[Any]:
    """``count`` EvalItems from the sample dataset: whole conversations, every token counted."""
    from engine.chat import render
    from engine.dataset import ConvertOptions, prepare
    from engine.evaluation import EvalItem

    prepared = prepare(SAMPLE, ConvertOptions(eval_fraction=0.0, max_seq_length=1_000_000))
    items = []
    for example in prepared.examples[:count]:
        # The last turns only: the demo model's context is short, and the judge sees no more anyway.
        messages = [m for m in example.messages if m["role"] == "system"][:1] + [
            m for m in example.messages if m["role"] != "system"
        ][-3:]
        ids = tokenizer(render(messages).text, add_special_tokens=False)["input_ids"]
        items.append(EvalItem(ids, [1] * len(ids), dict(example.meta), messages))
    return items

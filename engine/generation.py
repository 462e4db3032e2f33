"""Batched greedy generation for evaluation and judging: prompts left-padded into batches, each reply bounded
and stopped at <|eot_id|>.

Prompts are sorted by length before batching so a batch pads little; replies come back in the prompts'
order. Left padding keeps every prompt's last token at the same position, which is where generation starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

from engine.chat import EOT, Message, render

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase


def generate_batched(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[Message]],
    device: str,
    *,
    adapter: bool,
    max_new_tokens: int,
    batch_size: int = 8,
    stop: Callable[[], bool] = lambda: False,
) -> list[str]:
    """Greedy replies to ``prompts``, in order, with the adapter on or off (those ``stop`` cut short are empty)."""
    import torch

    texts = [render(list(prompt), add_generation_prompt=True).text for prompt in prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    replies: dict[int, str] = {}
    eot = tokenizer.convert_tokens_to_ids(EOT)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    context = nullcontext() if adapter else model.disable_adapter()
    model.eval()
    try:
        with context, torch.no_grad():
            for start in range(0, len(order), batch_size):
                if stop():
                    break
                indices = order[start : start + batch_size]
                batch = tokenizer(
                    [texts[i] for i in indices], add_special_tokens=False, padding=True, return_tensors="pt"
                ).to(device)
                out = model.generate(
                    **batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eot, pad_token_id=pad,
                    use_cache=True,
                )  # fmt: skip
                width = batch["input_ids"].shape[1]
                for row, index in enumerate(indices):
                    replies[index] = str(tokenizer.decode(out[row, width:], skip_special_tokens=True)).strip()
    finally:
        tokenizer.padding_side = side
    return [replies.get(i, "") for i in range(len(texts))]

"""The evaluating stage: held-out perplexity of the base model and of the adapter, per group, and side-by-side
generations, written to eval.json and emitted as an eval event.

Perplexity is over the held-out assistant tokens only (the same mask as training), each example on its own
(no packing, no KV cache), so base and adapter are measured on exactly the same tokens.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.chat import Message

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

GROUP_KEYS = ("persona", "emotional_arc", "topic")


@dataclass
class EvalItem:
    """One held-out example: its tokens, its loss mask and its metadata."""

    input_ids: list[int]
    mask: list[int]
    meta: dict[str, Any] = field(default_factory=dict)
    messages: Sequence[Message] = ()


@dataclass
class _Tally:
    nll: float = 0.0
    tokens: int = 0

    def add(self, nll: float, tokens: int) -> None:
        self.nll += nll
        self.tokens += tokens

    def perplexity(self) -> float | None:
        return math.exp(self.nll / self.tokens) if self.tokens else None


def _example_nll(model: PeftModel, item: EvalItem, device: str) -> tuple[float, int]:
    import torch

    ids = torch.tensor([item.input_ids], device=device)
    labels = torch.tensor([[t if m else -100 for t, m in zip(item.input_ids, item.mask, strict=True)]], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1, :].float()
    targets = labels[:, 1:]
    counted = int((targets != -100).sum())
    if counted == 0:
        return 0.0, 0
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return float(nll), counted


def perplexities(
    model: PeftModel, items: Sequence[EvalItem], device: str, *, adapter: bool, stop: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    """Overall and per-group perplexity of ``model`` with its adapter on or off."""
    overall = _Tally()
    groups: dict[str, dict[str, _Tally]] = defaultdict(lambda: defaultdict(_Tally))
    context = nullcontext() if adapter else model.disable_adapter()
    model.eval()
    with context:
        for item in items:
            if stop():
                break
            nll, count = _example_nll(model, item, device)
            overall.add(nll, count)
            for key in GROUP_KEYS:
                value = item.meta.get(key)
                if value:
                    groups[key][str(value)].add(nll, count)
    return {
        "perplexity": overall.perplexity(),
        "loss": overall.nll / overall.tokens if overall.tokens else None,
        "tokens": overall.tokens,
        "groups": {k: {g: t.perplexity() for g, t in v.items()} for k, v in groups.items()},
    }


def generation_prompts(items: Sequence[EvalItem], count: int) -> list[tuple[list[Message], str]]:
    """Up to ``count`` held-out prompts: each conversation up to its last user turn, and the reference reply."""
    prompts = []
    for item in items:
        messages = list(item.messages)
        last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last_assistant is None or last_assistant == 0:
            continue
        prompts.append((messages[:last_assistant], messages[last_assistant]["content"]))
        if len(prompts) >= count:
            break
    return prompts


def generate(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: list[Message],
    device: str,
    *,
    adapter: bool,
    max_new_tokens: int,
) -> str:
    """A greedy, bounded reply that stops at <|eot_id|>."""
    import torch

    from engine.chat import EOT, render

    text = render(prompt, add_generation_prompt=True).text
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(device)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    context = nullcontext() if adapter else model.disable_adapter()
    model.eval()
    with context, torch.no_grad():
        out = model.generate(
            **ids,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eot,
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
        )
    return str(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)).strip()


def evaluate(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[EvalItem],
    device: str,
    *,
    generations: int,
    max_new_tokens: int,
    stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Everything eval.json holds: base and adapter perplexity (overall and per group) and generations."""
    base = perplexities(model, items, device, adapter=False, stop=stop)
    tuned = perplexities(model, items, device, adapter=True, stop=stop)
    samples = []
    for prompt, reference in generation_prompts(items, generations):
        if stop():
            break
        samples.append(
            {
                "prompt": prompt[-1]["content"],
                "reference": reference,
                "base": generate(model, tokenizer, prompt, device, adapter=False, max_new_tokens=max_new_tokens),
                "adapter": generate(model, tokenizer, prompt, device, adapter=True, max_new_tokens=max_new_tokens),
            }
        )
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for key, values in tuned["groups"].items():
        groups[key] = {
            name: {"base_perplexity": base["groups"].get(key, {}).get(name), "adapter_perplexity": value}
            for name, value in values.items()
        }
    return {
        "examples": len(items),
        "tokens": tuned["tokens"],
        "base_perplexity": base["perplexity"],
        "adapter_perplexity": tuned["perplexity"],
        "base_loss": base["loss"],
        "eval_loss": tuned["loss"],
        "groups": groups,
        "generations": samples,
    }

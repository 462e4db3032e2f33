"""The evaluating stage: held-out perplexity of the base model and of the adapter, per group, and side-by-side
both models' replies to every held-out prompt (batched; eval_max_prompts bounds them), optionally judged by the
base model (engine.judge), written to eval.json and emitted as an eval event.

Perplexity is over the held-out assistant tokens only (the same mask as training), each example on its own
(no packing, no KV cache), so base and adapter are measured on exactly the same tokens.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.chat import Message
from engine.generation import generate_batched
from engine.judge import judge_pairs, visible_context

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

GROUP_KEYS = ("persona", "emotional_arc", "topic")
JUDGE_MAX_NEW_TOKENS = 160  # a verdict is one small JSON object


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


def generation_prompts(items: Sequence[EvalItem], count: int = 0) -> list[dict[str, Any]]:
    """Held-out prompts (up to ``count``; 0: all): each conversation up to its last user turn, the reference reply
    and the example's persona, arc and topic."""
    prompts = []
    for item in items:
        messages = list(item.messages)
        last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last_assistant is None or last_assistant == 0:
            continue
        meta = {key: item.meta[key] for key in GROUP_KEYS if item.meta.get(key)}
        prompts.append(
            {"prompt": messages[:last_assistant], "reference": messages[last_assistant]["content"], "meta": meta}
        )
        if count and len(prompts) >= count:
            break
    return prompts


def answer_held_out(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[EvalItem],
    device: str,
    *,
    max_prompts: int,
    max_new_tokens: int,
    batch_size: int,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[list[dict[str, Any]], int]:
    """Base and adapter replies to the held-out prompts (at most ``max_prompts``; 0: all), and how many there were;
    each prompt is kept as its system prompt and last turns (engine.judge.visible_context)."""
    every = generation_prompts(items)
    pairs = every[:max_prompts] if max_prompts else every
    prompts = [pair["prompt"] for pair in pairs]
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "stop": stop}
    base = generate_batched(model, tokenizer, prompts, device, adapter=False, **kwargs)
    adapter = generate_batched(model, tokenizer, prompts, device, adapter=True, **kwargs)
    for pair, base_reply, adapter_reply in zip(pairs, base, adapter, strict=True):
        # Kept as a judge or a rater sees it: eval.json and the eval event stay small however long the conversation.
        pair.update(prompt=visible_context(pair["prompt"]), base=base_reply, adapter=adapter_reply)
    return pairs, len(every)


def model_judge(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, device: str, *, batch_size: int, stop: Callable[[], bool]
) -> Callable[[list[list[Message]]], list[str]]:
    """The base model (adapter off) as the judge: batched greedy answers to judge prompts."""

    def ask(chats: list[list[Message]]) -> list[str]:
        return generate_batched(
            model, tokenizer, chats, device, adapter=False, max_new_tokens=JUDGE_MAX_NEW_TOKENS, batch_size=batch_size,
            stop=stop,
        )  # fmt: skip

    return ask


def evaluate(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[EvalItem],
    device: str,
    *,
    generations: int,
    max_new_tokens: int,
    max_prompts: int = 0,
    batch_size: int = 8,
    judge_criteria: Mapping[str, str] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Everything eval.json holds: base and adapter perplexity (overall and per group), both models' replies to the
    held-out prompts (the first ``generations`` also as samples) and, given criteria, the base model's judgement."""
    base = perplexities(model, items, device, adapter=False, stop=stop)
    tuned = perplexities(model, items, device, adapter=True, stop=stop)
    replies, held_out = answer_held_out(
        model, tokenizer, items, device, max_prompts=max_prompts, max_new_tokens=max_new_tokens,
        batch_size=batch_size, stop=stop,
    )  # fmt: skip
    samples = [
        {"prompt": r["prompt"][-1]["content"], "reference": r["reference"], "base": r["base"], "adapter": r["adapter"]}
        for r in replies[:generations]
    ]
    groups: dict[str, dict[str, dict[str, float]]] = {}
    for key, values in tuned["groups"].items():
        groups[key] = {
            name: {"base_perplexity": base["groups"].get(key, {}).get(name), "adapter_perplexity": value}
            for name, value in values.items()
        }
    result: dict[str, Any] = {
        "examples": len(items),
        "tokens": tuned["tokens"],
        "base_perplexity": base["perplexity"],
        "adapter_perplexity": tuned["perplexity"],
        "base_loss": base["loss"],
        "eval_loss": tuned["loss"],
        "groups": groups,
        "generations": samples,
        "replies": replies,
        "held_out_prompts": held_out,
        "bounded": held_out > len(replies),
    }
    if judge_criteria:
        ask = model_judge(model, tokenizer, device, batch_size=batch_size, stop=stop)
        bounded_from = held_out if held_out > len(replies) else None
        result["judge"] = judge_pairs(
            replies, judge_criteria, ask, judge="base model", bounded_from=bounded_from, stop=stop,
            batch_size=max(1, batch_size // 2),
        )  # fmt: skip
    return result

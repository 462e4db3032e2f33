"""Over-long examples split at turn boundaries: each window keeps the system prompt and as much context as fits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.dataset.model import ExampleMessage

BOS_TOKENS = 1


@dataclass(slots=True)
class Window:
    messages: list[ExampleMessage]
    tokens: int


@dataclass(slots=True)
class Fitted:
    windows: list[Window]
    skipped: list[int] = field(default_factory=list)  # ordinals of trained replies that cannot fit at all


def is_trained(message: ExampleMessage) -> bool:
    return message["role"] == "assistant" and message.get("weight", 1) != 0


def as_context(message: ExampleMessage) -> ExampleMessage:
    """The message as context only: an assistant turn gets ``weight: 0``."""
    if message["role"] != "assistant":
        return message
    return {"role": "assistant", "content": message["content"], "weight": 0}


def fit_windows(messages: Sequence[ExampleMessage], counts: Sequence[int], max_tokens: int) -> Fitted:
    """``messages`` as one window when it fits in ``max_tokens``; otherwise windows at turn boundaries.

    A turn is the user (or other) messages since the last reply, plus the reply. Each window opens at the first
    reply not yet trained with as many turns just before it as fit, as context (their replies with
    ``weight: 0``), so that reply sees exactly what pairs mode would show it; the room left takes the following
    turns. Every trained reply is trained in exactly one window; one that cannot fit even alone with the system
    prompt is skipped and reported by its ordinal.
    """
    total = BOS_TOKENS + sum(counts)
    if total <= max_tokens:
        return Fitted([Window(list(messages), total)])
    has_system = bool(messages) and messages[0]["role"] == "system"
    prefix = list(messages[:1]) if has_system else []
    prefix_tokens = BOS_TOKENS + (counts[0] if has_system else 0)
    turns: list[tuple[int, int]] = []  # [start, end) of each turn in messages
    start = len(prefix)
    for i in range(start, len(messages)):
        if messages[i]["role"] == "assistant":
            turns.append((start, i + 1))
            start = i + 1
    cost = [sum(counts[s:e]) for s, e in turns]
    trained = [is_trained(messages[e - 1]) for _, e in turns]
    ordinal = [sum(trained[:i]) for i in range(len(turns))]
    fitted = Fitted([])
    i = 0
    while i < len(turns):
        if not trained[i]:
            i += 1
            continue
        if prefix_tokens + cost[i] > max_tokens:
            fitted.skipped.append(ordinal[i])
            i += 1
            continue
        # Earlier context first, as much as fits beside this reply (what pairs mode gives it), then the
        # following turns the room left takes.
        used, first = prefix_tokens + cost[i], i
        while first > 0 and used + cost[first - 1] <= max_tokens:
            first -= 1
            used += cost[first]
        last = i
        while last + 1 < len(turns) and used + cost[last + 1] <= max_tokens:
            last += 1
            used += cost[last]
        while last > i and not trained[last]:
            used -= cost[last]
            last -= 1
        context = [as_context(m) for m in messages[turns[first][0] : turns[i][0]]]
        body = list(messages[turns[i][0] : turns[last][1]])
        fitted.windows.append(Window(prefix + context + body, used))
        i = last + 1
    return fitted

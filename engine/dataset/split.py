"""The held-out split: whole conversations, seeded, balanced across persona, emotional arc and topic."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from engine.dataset.model import Conversation


@dataclass(frozen=True, slots=True)
class Split:
    seed: int
    fraction: float
    strata: list[str]  # the metadata balanced: persona, emotional_arc, topic (those the conversations have)
    eval_indices: frozenset[int]  # conversation indices held out
    eval_ids: list[str]

    def side(self, conversation_index: int) -> str:
        return "eval" if conversation_index in self.eval_indices else "train"

    def to_dict(self, conversations: list[Conversation]) -> dict[str, Any]:
        held = [c for c in conversations if c.index in self.eval_indices]
        counts = {key: dict(sorted(Counter(c.strata().get(key, "?") for c in held).items())) for key in self.strata}
        return {
            "seed": self.seed,
            "fraction": self.fraction,
            "by": "conversation",
            "strata": self.strata,
            "eval_conversations": len(held),
            "eval_conversation_ids": self.eval_ids,
            "eval_conversation_indices": sorted(self.eval_indices),
            "eval_strata_counts": counts,
        }


def _rank(seed: int, conversation: Conversation) -> str:
    # By id rather than position: a conversation keeps its side when others are added or the file is reordered.
    return hashlib.sha256(
        f"{seed}:{conversation.id}:{0 if conversation.has_id else conversation.index}".encode()
    ).hexdigest()


def eval_size(conversations: int, fraction: float) -> int:
    """round(fraction × conversations), at least one when fraction > 0 and never every conversation."""
    if fraction <= 0 or conversations < 2:
        return 0
    return min(conversations - 1, max(1, round(fraction * conversations)))


def split_conversations(conversations: list[Conversation], fraction: float, seed: int) -> Split:
    """Hold out about ``fraction`` of the conversations (by count), spread over every persona, arc and topic.

    Conversations are visited in a seeded order; each pick is the one whose persona, arc and topic are least
    represented in the held-out set so far (relative to their share of the file), so small strata are not all
    drawn from one persona. The same file, fraction and seed always give the same split.
    """
    keys = [key for key in ("persona", "emotional_arc", "topic") if any(key in c.strata() for c in conversations)]
    size = eval_size(len(conversations), fraction)
    groups: dict[tuple[str | None, ...], list[Conversation]] = {}
    for conversation in sorted(conversations, key=lambda c: _rank(seed, c)):
        strata = conversation.strata()
        groups.setdefault(tuple(strata.get(key) for key in keys), []).append(conversation)
    totals = [Counter[str | None]() for _ in keys]
    for values, members in groups.items():
        for k, value in enumerate(values):
            totals[k][value] += len(members)
    held = [Counter[str | None]() for _ in keys]
    taken = dict.fromkeys(groups, 0)

    def crowding(values: tuple[str | None, ...]) -> tuple[float, str]:
        share = max(((held[k][v] + 1) / totals[k][v] for k, v in enumerate(values)), default=0.0)
        return share, _rank(seed, groups[values][taken[values]])

    chosen: list[Conversation] = []
    for _ in range(size):
        # Conversations sharing persona, arc and topic are interchangeable here: take each group's next in rank.
        values = min((v for v in groups if taken[v] < len(groups[v])), key=crowding)
        chosen.append(groups[values][taken[values]])
        taken[values] += 1
        for k, value in enumerate(values):
            held[k][value] += 1
    chosen.sort(key=lambda c: c.index)
    return Split(seed, fraction, keys, frozenset(c.index for c in chosen), [c.id for c in chosen])

"""Records to training examples: repairs, the duplicated user turn dropped, and the two example modes.

A conversation's trainable pairs form a chain: each pair's context (system prompt, history, user input) is the
previous pair's context plus its reply and the next user turn. ``conversations`` mode trains the chain once,
with a loss on every reply; ``pairs`` mode makes one example per reply with the earlier replies as context
(``weight: 0``). Causal attention gives each reply the same prefix either way, so both modes supervise the very
same tokens; conversations needs about half as many. Where a pair's context does not continue the chain (an
edited history, another system prompt), a new chain starts, so nothing is trained that pairs mode would not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.config import DatasetMode
from engine.dataset.checks import ESCAPES, is_truncated, location
from engine.dataset.model import Conversation, Dataset, Example, ExampleMessage, Pair
from engine.dataset.report import Findings, plural
from engine.dataset.tokens import CharEstimate, ChatTokenizer
from engine.dataset.windows import as_context, fit_windows, is_trained

_UNESCAPED = {"r\\n": "\n", "n": "\n", "t": "\t", '"': '"'}


@dataclass(slots=True)
class Repairs:
    """The repairs (each on unless turned off), and how much each changed."""

    unescape: bool = True
    drop_truncated: bool = True
    unescaped_texts: int = 0
    dropped_pairs: int = 0
    _texts: dict[str, str] = field(default_factory=dict, repr=False)
    _replies: set[str] = field(default_factory=set, repr=False)  # the trained replies the repair changed

    def reply(self, value: str) -> str:
        """A reply to be trained, repaired: counted apart from the other texts, as what the model would learn."""
        fixed = self.text(value)
        if fixed != value:
            self._replies.add(value)
        return fixed

    def text(self, value: str) -> str:
        if not self.unescape:
            return value
        fixed = self._texts.get(value)
        if fixed is None:
            fixed = ESCAPES.sub(lambda m: _UNESCAPED[m.group(1)], value)
            self._texts[value] = fixed
            self.unescaped_texts += fixed != value
        return fixed

    def to_dict(self) -> dict[str, Any]:
        applied: dict[str, Any] = {}
        if self.unescape:
            applied["unescape"] = {"texts": self.unescaped_texts, "replies": len(self._replies)}
        if self.drop_truncated:
            applied["drop_truncated"] = {"pairs": self.dropped_pairs}
        return applied


def describe_repairs(applied: dict[str, Any]) -> list[str]:
    """One line per repair a conversion made (its manifest's ``repairs``), with its counts and how to turn it off."""
    lines = []
    if "unescape" in applied:
        done = applied["unescape"]
        replies = done.get("replies", 0)
        lines.append(
            f"repaired literal backslash-n in {plural(done['texts'], 'text')} ({replies:,} trained "
            f"repl{'y' if replies == 1 else 'ies'}); --no-unescape keeps them"
        )
    if "drop_truncated" in applied:
        lines.append(
            f"left {plural(applied['drop_truncated']['pairs'], 'pair')} whose reply stops mid-sentence out of "
            "training; --keep-truncated trains them"
        )
    return lines


@dataclass(slots=True)
class Chain:
    """A run of consistent pairs as one chat; ``pairs`` maps each trained assistant message to its pair."""

    conversation: Conversation
    messages: list[ExampleMessage]
    pairs: dict[int, Pair]


def _message(role: str, content: str, weight: int = 1) -> ExampleMessage:
    message: ExampleMessage = {"role": role, "content": content}
    if weight == 0:
        message["weight"] = 0
    return message


def _context(pair: Pair, repairs: Repairs) -> list[ExampleMessage]:
    """The chat a pair's reply continues: system prompt, history without the repeated user turn, user input."""
    messages = []
    if pair.system_prompt.strip():
        messages.append(_message("system", repairs.text(pair.system_prompt)))
    history = pair.history
    if (
        pair.user_input is not None
        and history
        and history[-1].role == "user"
        and history[-1].content.strip() == pair.user_input.strip()
    ):
        history = history[:-1]
    for turn in history:
        if turn.content.strip():
            messages.append(_message(turn.role, repairs.text(turn.content), 0 if turn.role == "assistant" else 1))
    if pair.user_input is not None and pair.user_input.strip():
        messages.append(_message("user", repairs.text(pair.user_input)))
    return messages


def _same(a: ExampleMessage, b: ExampleMessage) -> bool:
    return a["role"] == b["role"] and a["content"].strip() == b["content"].strip()


def _continues(chain: list[ExampleMessage], context: list[ExampleMessage]) -> bool:
    return len(context) >= len(chain) and all(_same(a, b) for a, b in zip(chain, context, strict=False))


def trainable(pair: Pair, repairs: Repairs) -> bool:
    """A pair with a reply to learn (and, under drop_truncated, a complete one)."""
    if pair.target is None or not pair.target.strip():
        return False
    if repairs.drop_truncated and is_truncated(pair.target):
        repairs.dropped_pairs += 1
        return False
    return True


def chains(conversation: Conversation, repairs: Repairs) -> Iterator[Chain]:
    """The conversation's trainable pairs as chats; one chain unless a history breaks off."""
    current: Chain | None = None
    # By the length of their history, so pairs listed out of turn order still chain up.
    for pair in sorted(conversation.pairs, key=lambda p: len(p.history)):
        if not trainable(pair, repairs):
            continue
        context = _context(pair, repairs)
        if current is not None and _continues(current.messages, context):
            current.messages.extend(context[len(current.messages) :])
        else:
            if current is not None:
                yield current
            current = Chain(conversation, context, {})
        current.pairs[len(current.messages)] = pair
        current.messages.append(_message("assistant", repairs.reply(pair.target or "")))
    if current is not None:
        yield current


def chain_examples(chain: Chain, mode: DatasetMode) -> Iterator[tuple[list[ExampleMessage], list[Pair]]]:
    """The chain as one chat (conversations mode), or one chat per reply with earlier replies as context (pairs)."""
    if mode is DatasetMode.CONVERSATIONS:
        yield chain.messages, list(chain.pairs.values())
        return
    for index, pair in chain.pairs.items():
        yield [as_context(m) for m in chain.messages[:index]] + [chain.messages[index]], [pair]


def build_examples(
    dataset: Dataset,
    mode: DatasetMode,
    counter: ChatTokenizer | CharEstimate,
    max_seq_length: int,
    repairs: Repairs,
    findings: Findings,
) -> list[Example]:
    """Every training example of the dataset, each within max_seq_length tokens (split at turn boundaries)."""
    examples = []
    long_examples = windows_made = 0
    for conversation in dataset.conversations:
        base: dict[str, Any] = {
            "conversation_id": conversation.id,
            "conversation_index": conversation.index,
            "persona": conversation.persona,
            "emotional_arc": conversation.emotional_arc,
            "topic": conversation.topic,
        }
        for chain in chains(conversation, repairs):
            for messages, pairs in chain_examples(chain, mode):
                fitted = fit_windows(messages, counter.message_tokens(messages), max_seq_length)
                for ordinal in fitted.skipped:
                    pair = pairs[ordinal]
                    findings.warn("turn_too_long", location(dataset, conversation, pair, pair.target_field))
                if len(fitted.windows) > 1 or fitted.skipped:
                    long_examples += 1
                    windows_made += len(fitted.windows)
                kept = iter([p for k, p in enumerate(pairs) if k not in fitted.skipped])
                for number, window in enumerate(fitted.windows, start=1):
                    trained = [next(kept) for m in window.messages if is_trained(m)]
                    meta = {
                        **base,
                        "pair_ids": [p.id for p in trained],
                        "window": {"index": number, "of": len(fitted.windows)},
                        "tokens": window.tokens,
                        "trained_tokens": counter.trained_tokens(window.messages),
                    }
                    if trained[0].line is not None:
                        meta["line"] = trained[0].line
                    examples.append(Example(window.messages, meta))
    if long_examples:
        findings.warn("over_length", count=long_examples)
        noun = "conversation" if mode is DatasetMode.CONVERSATIONS else "example"
        findings.describe(
            "over_length",
            lambda n: (
                f"{plural(n, noun)} longer than {max_seq_length:,} tokens: conversion splits each at turn "
                f"boundaries into {plural(windows_made, 'window')}, each with the system prompt and as much "
                "earlier context as fits; every reply is trained once"
            ),
        )
    findings.describe(
        "turn_too_long",
        lambda n: (
            f"a user turn and its reply do not fit in {max_seq_length:,} tokens even without earlier context, in "
            f"{plural(n, 'place')}: not trained (raise max_seq_length to keep them)"
        ),
    )
    return examples

"""Content that can be trained but looks wrong: counted by kind, each kind with its first few places."""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.config import DatasetFormat
from engine.dataset.model import Conversation, Dataset, Pair
from engine.dataset.report import Findings, Location, plural

LOW_QUALITY_SCORE = 3.0  # on brightrun's 1–5 scale: below "acceptable"
_OPEN_ENDINGS = ",;:-–—(/&\\"  # a reply that ends on one of these stopped mid-sentence


def is_truncated(text: str) -> bool:
    """A reply that stops mid-sentence: it ends in a letter, a digit, a comma or a dangling backslash."""
    tail = text.rstrip()
    return bool(tail) and (tail[-1].isalnum() or tail[-1] in _OPEN_ENDINGS)


ESCAPES = re.compile(r'\\(r\\n|n|t|")')  # literal \n, \r\n, \t and \" left by escaping text twice


def has_escaped_newlines(text: str) -> bool:
    """Literal backslash-n (or backslash-quote) where a line break (or a quote) was meant."""
    return ("\\" in text) and ESCAPES.search(text) is not None


def location(
    dataset: Dataset, conversation: Conversation, pair: Pair | None = None, field: str | None = None
) -> Location:
    """Where a pair is: by conversation and pair for one JSON document, by line for JSONL."""
    file = dataset.path.name
    if dataset.format is DatasetFormat.CHAT_JSONL:
        return Location(file=file, line=conversation.line, field=field)
    if dataset.format is DatasetFormat.BRIGHTRUN_JSONL:
        line = pair.line if pair else conversation.line
        return Location(file=file, line=line, pair_id=pair.id if pair else None, field=field)
    return Location(
        conversation_index=conversation.index,
        conversation_id=conversation.id if conversation.has_id else None,
        pair_index=pair.index if pair else None,
        pair_id=pair.id if pair else None,
        field=field,
    )


_At = Callable[[Pair | None, str | None], Location]


def _locator(dataset: Dataset, conversation: Conversation) -> _At:
    def at(pair: Pair | None, field: str | None) -> Location:
        return location(dataset, conversation, pair, field)

    return at


def check_dataset(dataset: Dataset, findings: Findings, *, refuse_empty: bool = True) -> int:
    """Warn about suspicious content; an error when nothing at all can be trained. Returns the trainable pairs."""
    chat = dataset.format is DatasetFormat.CHAT_JSONL
    trainable = 0
    scores: list[float] = []
    texts: dict[tuple[tuple[str | None, ...], ...], int] = {}
    ids: dict[str, int] = {}
    escaped: set[str] = set()
    for conversation in dataset.conversations:
        at = _locator(dataset, conversation)
        pair_ids: set[str] = set()
        if chat and not any(p.target is not None for p in conversation.pairs):
            findings.warn("no_assistant_turn", at(None, None))
        for pair in conversation.pairs:
            if not chat and pair.id in pair_ids:
                findings.warn("duplicate_pair_id", at(pair, "id"))
            pair_ids.add(pair.id)
            if _newly_escaped(pair.system_prompt, escaped):
                findings.warn("escaped_newlines", at(pair, "system_prompt"))
            trainable += _check_pair(pair, findings, at, chat, escaped)
            if pair.quality_score is not None:
                scores.append(pair.quality_score)
                if pair.quality_score < LOW_QUALITY_SCORE:
                    findings.warn("low_quality_score", at(pair, "training_metadata.quality_score"))
        text = tuple((p.system_prompt, p.user_input, p.target) for p in conversation.pairs)
        if text and text in texts:
            findings.warn("duplicate_conversation", at(None, None))
        elif conversation.has_id and conversation.id in ids:
            findings.warn("duplicate_conversation", at(None, "conversation_metadata.conversation_id"))
        texts.setdefault(text, conversation.index)
        ids.setdefault(conversation.id, conversation.index)
    if len(scores) > 1 and min(scores) == max(scores):
        findings.warn("uniform_quality_score", count=len(scores))
    if refuse_empty and not dataset.conversations:
        findings.error("nothing_trainable", "the file holds no conversations")
    elif refuse_empty and trainable == 0:
        findings.error("nothing_trainable", "no pair has a reply to learn: every target is null or empty")
    _describe(findings, scores[0] if scores else 0.0)
    return trainable


def _newly_escaped(text: str, seen: set[str]) -> bool:
    """True the first time a text with literal escapes is met: a user turn recurs in two pairs, count it once."""
    if not has_escaped_newlines(text) or text in seen:
        return False
    seen.add(text)
    return True


def _check_pair(pair: Pair, findings: Findings, at: _At, chat: bool, escaped: set[str]) -> int:
    history = pair.history
    if pair.user_input is not None:
        if history and history[-1].role == "user" and history[-1].content.strip() == pair.user_input.strip():
            findings.warn("duplicated_user_turn", at(pair, "conversation_history"))
        if not pair.user_input.strip():
            findings.warn("empty_content", at(pair, pair.input_field))
        elif _newly_escaped(pair.user_input, escaped):
            findings.warn("escaped_newlines", at(pair, pair.input_field))
    if pair.target is None:
        if not chat:
            findings.warn("null_target", at(pair, "target_response"))
        return 0
    if not pair.target.strip():
        findings.warn("empty_content", at(pair, pair.target_field))
        return 0
    if _newly_escaped(pair.target, escaped):
        findings.warn("escaped_newlines", at(pair, pair.target_field))
    if is_truncated(pair.target):
        findings.warn("truncated_response", at(pair, pair.target_field))
    return 1


def _describe(findings: Findings, score: float) -> None:
    messages: dict[str, Callable[[int], str]] = {
        "null_target": lambda n: (
            f"target_response is null in {plural(n, 'pair')}: a user turn awaiting its reply, nothing to learn "
            "(skipped)"
        ),
        "duplicated_user_turn": lambda n: (
            f"conversation_history ends with current_user_input in {plural(n, 'pair')}, so the user turn is "
            "there twice: conversion keeps one"
        ),
        "escaped_newlines": lambda n: (
            f"literal escapes (backslash-n, backslash-quote) stand for line breaks and quotes in "
            f"{plural(n, 'text')}: repaired by default (--no-unescape keeps them)"
        ),
        "truncated_response": lambda n: (
            f"the reply stops mid-sentence or ends in a dangling backslash in {plural(n, 'pair')}: "
            "left out of training by default (--keep-truncated trains them)"
        ),
        "empty_content": lambda n: (
            f"empty text in {plural(n, 'place')}: empty turns are left out, empty replies not trained"
        ),
        "duplicate_conversation": lambda n: (
            f"{plural(n, 'conversation')} repeat the text or id of an earlier one: trained twice, and the "
            "held-out split may hold it on both sides"
        ),
        "duplicate_pair_id": lambda n: f"a pair id repeats within its conversation ({plural(n, 'time')})",
        "low_quality_score": lambda n: f"quality_score is below {LOW_QUALITY_SCORE:g} in {plural(n, 'pair')}",
        "uniform_quality_score": lambda n: (
            f"quality_score is {score:g} in all {n:,} pairs: the scores say nothing about which replies are better"
        ),
        "no_assistant_turn": lambda n: f"no assistant turn in {plural(n, 'conversation')}: nothing to learn (skipped)",
    }
    for code, message in messages.items():
        findings.describe(code, message)

"""The two JSONL shapes, read line by line into records: brightrun's export (one pair per line) and chat messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from engine.dataset.model import Conversation, Pair, Turn
from engine.dataset.report import Findings, Location
from engine.dataset.schema import Checker, as_dict, describe, read_pair, strata_of, text_id


def read_brightrun_lines(
    lines: Iterable[tuple[int, Any]], file: str, findings: Findings
) -> tuple[list[Conversation], dict[str, Any]]:
    """The JSONL export: an optional ``{"_meta": {...}}`` first line, then one pair per line.

    Pairs are grouped by ``conversation_metadata.conversation_id`` when the export carries it; otherwise by
    source order, a new conversation starting wherever turn_number stops increasing or the persona, arc, topic
    or template changes.
    """
    metadata: dict[str, Any] = {}
    groups: dict[Any, list[Pair]] = {}
    strata: dict[Any, tuple[str | None, ...]] = {}  # from each conversation's first pair
    texts: dict[str, str] = {}
    previous: tuple[Any, ...] | None = None
    run = 0
    for position, (line, value) in enumerate(lines):
        where = Location(file=file, line=line)
        if isinstance(value, dict) and "_meta" in value:
            if position == 0 and isinstance(value["_meta"], dict):
                metadata = value["_meta"]
            else:
                problem = "_meta: expected an object" if position == 0 else "a _meta line after the first line"
                findings.error("wrong_shape", problem, where)
            continue
        pair = read_pair(value, 0, where, findings, texts)
        if pair is None:
            continue
        pair_meta = as_dict(value.get("conversation_metadata"))
        explicit = text_id(pair_meta.get("conversation_id"))
        signature = (value.get("conversation_id"), *strata_of({}, pair_meta))
        if explicit is None:
            starts = previous is None or signature != previous[0] or (pair.turn_number or 0) <= (previous[1] or 0)
            run += starts
        previous = (signature, pair.turn_number)
        key = explicit if explicit is not None else ("run", run)
        groups.setdefault(key, []).append(pair)
        strata.setdefault(key, strata_of({}, pair_meta))
    conversations = []
    for index, (key, members) in enumerate(groups.items()):
        conversation_id = key if isinstance(key, str) else None
        pairs = [replace(pair, index=i) for i, pair in enumerate(members)]
        persona, arc, topic = strata[key]
        conversations.append(
            Conversation(
                index=index,
                id=conversation_id or f"#{index}",
                pairs=pairs,
                persona=persona,
                emotional_arc=arc,
                topic=topic,
                line=pairs[0].line,
                has_id=conversation_id is not None,
            )
        )
    return conversations, metadata


def read_chat_lines(lines: Iterable[tuple[int, Any]], file: str, findings: Findings) -> list[Conversation]:
    """Chat JSONL: ``{"messages": [{"role", "content"}, ...]}`` per line; each assistant message is a pair.

    An assistant message with ``"weight": 0`` (OpenAI's convention) is context, not a target.
    """
    conversations = []
    texts: dict[str, str] = {}
    for index, (line, value) in enumerate(lines):
        where = Location(file=file, line=line)
        if not isinstance(value, dict):
            findings.error("wrong_shape", f"expected an object with a 'messages' list, found {describe(value)}", where)
            continue
        check = Checker(findings, texts)
        raw_messages = check.field(value, "messages", (list,), where)
        if not isinstance(raw_messages, list):
            continue
        turns = check.turns(raw_messages, where, "messages")
        weights = []
        for i, item in enumerate(raw_messages):
            weight = item.get("weight", 1) if isinstance(item, dict) else 1
            if weight not in (0, 1) or isinstance(weight, bool):
                check.fail("wrong_type", f"messages[{i}].weight: expected 0 or 1, found {describe(weight)}", where)
            weights.append(weight)
        if check.failed:
            continue
        meta = as_dict(value.get("metadata"))
        persona, arc, topic = strata_of(meta, meta)
        conversation_id = text_id(value.get("id")) or text_id(meta.get("conversation_id"))
        conversations.append(
            Conversation(
                index=index,
                id=conversation_id or f"#{index}",
                pairs=_chat_pairs(turns, weights, line),
                persona=persona,
                emotional_arc=arc,
                topic=topic,
                line=line,
                has_id=conversation_id is not None,
            )
        )
    return conversations


def _chat_pairs(turns: list[Turn], weights: list[int], line: int) -> list[Pair]:
    offset = 1 if turns and turns[0].role == "system" else 0
    system = turns[0].content if offset else ""
    body = turns[offset:]
    pairs: list[Pair] = []
    for i, turn in enumerate(body):
        if turn.role != "assistant":
            continue
        before = body[:i]
        user_input = before[-1].content if before and before[-1].role == "user" else None
        history = before[:-1] if user_input is not None else before
        name = f"messages[{i + offset}]"
        target = turn.content if weights[i + offset] != 0 else None
        pair = Pair(len(pairs), name, system, list(history), user_input, target, line=line, target_field=name)
        pair.input_field = f"messages[{i + offset - 1}]"
        pairs.append(pair)
    return pairs

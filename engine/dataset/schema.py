"""The accepted shapes, checked field by field and normalised into records; every problem located, none raised."""

from __future__ import annotations

import difflib
from dataclasses import replace
from typing import Any

from engine.chat import ROLES
from engine.dataset.model import Conversation, Pair, Turn
from engine.dataset.report import Findings, Location

_BAD = object()  # a field that failed its check (already reported)
_NAMES = {
    str: "text",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
}


def describe(value: Any) -> str:
    """A value's JSON type in words, with a glimpse of it."""
    if isinstance(value, bool):
        shown = f"true or false ({str(value).lower()})"
    elif isinstance(value, (int, float)):
        shown = f"a number ({value})"
    elif isinstance(value, str):
        shown = f"text ({value[:20]!r}{'…' if len(value) > 20 else ''})"
    elif isinstance(value, list):
        shown = f"a list of {len(value)}"
    else:
        shown = {type(None): "null", dict: "an object"}.get(type(value), type(value).__name__)
    return shown


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int) and float in kinds:
        return True
    return isinstance(value, kinds)


class _Checker:
    """Field checks that report into ``findings`` and tell the caller whether the record is usable."""

    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.failed = False

    def field(
        self, obj: dict[str, Any], key: str, kinds: tuple[type, ...], where: Location, path: str = "", **options: bool
    ) -> Any:
        """obj[key] when it has one of ``kinds``; None when absent and optional (or null and nullable); else _BAD."""
        value = obj.get(key)
        if type(value) in kinds or _is(value, kinds):
            return value
        name = f"{path}{key}"
        if key not in obj:
            if not options.get("required", True):
                return None
            close = difflib.get_close_matches(key, [k for k in obj if isinstance(k, str)], n=1, cutoff=0.8)
            hint = f" (found {close[0]!r})" if close else ""
            self.fail("missing_field", f"{name}: required field is missing{hint}", replace(where, field=name))
            return _BAD
        if value is None and options.get("nullable", False):
            return None
        expected = " or ".join(_NAMES[k] for k in kinds) + (" or null" if options.get("nullable") else "")
        self.fail("wrong_type", f"{name}: expected {expected}, found {describe(value)}", replace(where, field=name))
        return _BAD

    def fail(self, code: str, message: str, where: Location) -> None:
        self.failed = True
        self.findings.error(code, message, where)

    def turns(self, raw: list[Any], where: Location, path: str) -> list[Turn]:
        turns = []
        for i, item in enumerate(raw):
            if type(item) is dict:
                role, content = item.get("role"), item.get("content")
                if type(role) is str and role in ROLES and type(content) is str:
                    turns.append(Turn(role, content))
                    continue
            at = f"{path}[{i}]"
            if not isinstance(item, dict):
                self.fail("wrong_type", f"{at}: expected an object, found {describe(item)}", replace(where, field=at))
                continue
            role = self.field(item, "role", (str,), where, f"{at}.")
            content = self.field(item, "content", (str,), where, f"{at}.")
            if isinstance(role, str) and role not in ROLES:
                self.fail(
                    "unknown_role", f"{at}.role: {role!r} is not a role ({', '.join(ROLES)})", replace(where, field=at)
                )
            elif isinstance(role, str) and isinstance(content, str):
                turns.append(Turn(role, content))
        return turns


def _text_id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_pair(raw: Any, index: int, where: Location, findings: Findings) -> Pair | None:
    """A brightrun-lora-v4 pair; None (with findings) when a field it needs is missing or of the wrong type."""
    if not isinstance(raw, dict):
        findings.error("wrong_type", f"expected a pair (an object), found {describe(raw)}", where)
        return None
    check = _Checker(findings)
    pair_id = _text_id(raw.get("id"))
    if pair_id is None and "id" not in raw:
        check.field(raw, "id", (str, int), where)
    elif pair_id is None:
        found = describe(raw["id"])
        check.fail("wrong_type", f"id: expected text or a whole number, found {found}", replace(where, field="id"))
    at = replace(where, pair_id=pair_id) if pair_id else where
    system_prompt = check.field(raw, "system_prompt", (str,), at)
    history_raw = check.field(raw, "conversation_history", (list,), at)
    history = check.turns(history_raw, at, "conversation_history") if isinstance(history_raw, list) else []
    user_input = check.field(raw, "current_user_input", (str,), at)
    target = check.field(raw, "target_response", (str,), at, nullable=True)
    turn_number = check.field(raw, "turn_number", (int,), at, required=False)
    for key in ("conversation_metadata", "training_metadata", "emotional_context"):
        check.field(raw, key, (dict,), at, required=False, nullable=True)
    training = raw.get("training_metadata")
    score = None
    if isinstance(training, dict):
        score = check.field(
            training, "quality_score", (float,), at, "training_metadata.", required=False, nullable=True
        )
    if check.failed:
        return None
    return Pair(
        index=index,
        id=pair_id or f"#{index}",
        system_prompt=system_prompt,
        history=history,
        user_input=user_input,
        target=target,
        turn_number=turn_number,
        quality_score=float(score) if score is not None else None,
        line=where.line,
    )


def _first(*values: Any) -> str | None:
    return next((v.strip() for v in values if isinstance(v, str) and v.strip()), None)


def strata_of(conversation_meta: dict[str, Any], pair_meta: dict[str, Any]) -> tuple[str | None, ...]:
    """Persona, emotional arc and topic from a conversation's scaffolding or, failing that, its first pair."""
    scaffold = conversation_meta.get("scaffolding")
    scaffold = scaffold if isinstance(scaffold, dict) else {}
    persona = _first(scaffold.get("persona_key"), pair_meta.get("persona_archetype"), pair_meta.get("client_persona"))
    arc = _first(scaffold.get("emotional_arc_key"), pair_meta.get("emotional_arc_key"), pair_meta.get("emotional_arc"))
    topic = _first(
        scaffold.get("training_topic_key"), pair_meta.get("training_topic_key"), pair_meta.get("training_topic")
    )
    return persona, arc, topic


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def read_brightrun(data: Any, file: str, findings: Findings) -> tuple[list[Conversation], dict[str, Any]]:
    """A brightrun-lora-v4 document: ``{training_file_metadata, consultant_profile, conversations: [...]}``."""
    top = Location(file=file)
    if not isinstance(data, dict):
        hint = ""
        if isinstance(data, list) and data and isinstance(data[0], dict) and "messages" in data[0]:
            hint = " (a list of chats: write one per line and use --format chat-jsonl)"
        findings.error(
            "wrong_shape",
            f"the top level is {describe(data)}: a brightrun-lora-v4 file is an object with a "
            f"'conversations' list{hint}",
            top,
        )
        return [], {}
    raw_conversations = data.get("conversations")
    if not isinstance(raw_conversations, list):
        found = (
            "no 'conversations'" if raw_conversations is None else f"'conversations' is {describe(raw_conversations)}"
        )
        findings.error(
            "wrong_shape",
            f"{found}: a brightrun-lora-v4 file lists its conversations there",
            replace(top, field="conversations"),
        )
        return [], {}
    conversations = []
    for index, raw in enumerate(raw_conversations):
        where = Location(conversation_index=index)
        if not isinstance(raw, dict):
            findings.error("wrong_type", f"expected a conversation (an object), found {describe(raw)}", where)
            continue
        meta = _dict(raw.get("conversation_metadata"))
        conversation_id = _text_id(meta.get("conversation_id"))
        where = replace(where, conversation_id=conversation_id)
        check = _Checker(findings)
        raw_pairs = check.field(raw, "training_pairs", (list,), where)
        check.field(raw, "conversation_metadata", (dict,), where, required=False, nullable=True)
        if not isinstance(raw_pairs, list):
            continue
        pairs = [
            pair
            for i, item in enumerate(raw_pairs)
            if (pair := read_pair(item, i, Location(None, None, None, index, conversation_id, i), findings)) is not None
        ]
        first_meta = (
            _dict(raw_pairs[0].get("conversation_metadata")) if raw_pairs and isinstance(raw_pairs[0], dict) else {}
        )
        persona, arc, topic = strata_of(meta, first_meta)
        conversations.append(
            Conversation(
                index=index,
                id=conversation_id or f"#{index}",
                pairs=pairs,
                persona=persona,
                emotional_arc=arc,
                topic=topic,
                has_id=conversation_id is not None,
            )
        )
    return conversations, {k: v for k, v in data.items() if k != "conversations"}


def read_brightrun_lines(
    lines: list[tuple[int, Any]], file: str, findings: Findings
) -> tuple[list[Conversation], dict[str, Any]]:
    """The JSONL export: an optional ``{"_meta": {...}}`` first line, then one pair per line.

    Pairs are grouped by ``conversation_metadata.conversation_id`` when the export carries it; otherwise by
    source order, a new conversation starting wherever turn_number stops increasing or the persona, arc, topic
    or template changes.
    """
    metadata: dict[str, Any] = {}
    groups: dict[Any, list[tuple[Pair, dict[str, Any]]]] = {}
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
        pair = read_pair(value, 0, where, findings)
        if pair is None:
            continue
        pair_meta = _dict(value.get("conversation_metadata"))
        explicit = _text_id(pair_meta.get("conversation_id"))
        signature = (value.get("conversation_id"), *strata_of({}, pair_meta))
        if explicit is None:
            starts = previous is None or signature != previous[0] or (pair.turn_number or 0) <= (previous[1] or 0)
            run += starts
        previous = (signature, pair.turn_number)
        groups.setdefault(explicit if explicit is not None else ("run", run), []).append((pair, pair_meta))
    conversations = []
    for index, (key, members) in enumerate(groups.items()):
        conversation_id = key if isinstance(key, str) else None
        pairs = [replace(pair, index=i) for i, (pair, _) in enumerate(members)]
        persona, arc, topic = strata_of({}, members[0][1])
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


def read_chat_lines(lines: list[tuple[int, Any]], file: str, findings: Findings) -> list[Conversation]:
    """Chat JSONL: ``{"messages": [{"role", "content"}, ...]}`` per line; each assistant message is a pair.

    An assistant message with ``"weight": 0`` (OpenAI's convention) is context, not a target.
    """
    conversations = []
    for index, (line, value) in enumerate(lines):
        where = Location(file=file, line=line)
        if not isinstance(value, dict):
            findings.error("wrong_shape", f"expected an object with a 'messages' list, found {describe(value)}", where)
            continue
        check = _Checker(findings)
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
        meta = _dict(value.get("metadata"))
        persona, arc, topic = strata_of(meta, meta)
        conversation_id = _text_id(value.get("id")) or _text_id(meta.get("conversation_id"))
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

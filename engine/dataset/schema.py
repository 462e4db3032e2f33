"""The brightrun-lora-v4 shape checked field by field into records; every problem located, none raised."""

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


class Checker:
    """Field checks that report into ``findings`` and tell the caller whether the record is usable."""

    def __init__(self, findings: Findings, texts: dict[str, str] | None = None) -> None:
        self.findings = findings
        self.failed = False
        self.texts = {} if texts is None else texts

    def share(self, text: str) -> str:
        """The one string kept for this text: each pair repeats the history before it, so most texts recur."""
        return self.texts.setdefault(text, text)

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
                    turns.append(Turn(role, self.share(content)))
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
                turns.append(Turn(role, self.share(content)))
        return turns


def text_id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def read_pair(
    raw: Any, index: int, where: Location, findings: Findings, texts: dict[str, str] | None = None
) -> Pair | None:
    """A brightrun-lora-v4 pair; None (with findings) when a field it needs is missing or of the wrong type.

    ``texts``: the texts already read, so a text that recurs is held once.
    """
    if not isinstance(raw, dict):
        findings.error("wrong_type", f"expected a pair (an object), found {describe(raw)}", where)
        return None
    check = Checker(findings, texts)
    pair_id = text_id(raw.get("id"))
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
        system_prompt=check.share(system_prompt),
        history=history,
        user_input=check.share(user_input),
        target=check.share(target) if target is not None else None,
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


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def wrong_top_level(data: Any, file: str, findings: Findings) -> None:
    """The error for a document that is not an object (a brightrun-lora-v4 file is one)."""
    hint = ""
    if isinstance(data, list) and data and isinstance(data[0], dict) and "messages" in data[0]:
        hint = " (a list of chats: write one per line and use --format chat-jsonl)"
    findings.error(
        "wrong_shape",
        f"the top level is {describe(data)}: a brightrun-lora-v4 file is an object with a 'conversations' list{hint}",
        Location(file=file),
    )


def wrong_conversations(value: Any, file: str, findings: Findings, *, missing: bool = False) -> None:
    """The error for a document whose 'conversations' is missing or not a list."""
    found = "no 'conversations'" if missing else f"'conversations' is {describe(value)}"
    findings.error(
        "wrong_shape",
        f"{found}: a brightrun-lora-v4 file lists its conversations there",
        Location(file=file, field="conversations"),
    )


def read_conversation(raw: Any, index: int, findings: Findings, texts: dict[str, str]) -> Conversation | None:
    """conversations[index] of a brightrun-lora-v4 document: its metadata and training pairs."""
    where = Location(conversation_index=index)
    if not isinstance(raw, dict):
        findings.error("wrong_type", f"expected a conversation (an object), found {describe(raw)}", where)
        return None
    meta = as_dict(raw.get("conversation_metadata"))
    conversation_id = text_id(meta.get("conversation_id"))
    where = replace(where, conversation_id=conversation_id)
    check = Checker(findings, texts)
    raw_pairs = check.field(raw, "training_pairs", (list,), where)
    check.field(raw, "conversation_metadata", (dict,), where, required=False, nullable=True)
    if not isinstance(raw_pairs, list):
        return None
    pairs = [
        pair
        for i, item in enumerate(raw_pairs)
        if (pair := read_pair(item, i, replace(where, pair_index=i), findings, texts)) is not None
    ]
    first_meta = (
        as_dict(raw_pairs[0].get("conversation_metadata")) if raw_pairs and isinstance(raw_pairs[0], dict) else {}
    )
    persona, arc, topic = strata_of(meta, first_meta)
    return Conversation(
        index=index,
        id=conversation_id or f"#{index}",
        pairs=pairs,
        persona=persona,
        emotional_arc=arc,
        topic=topic,
        has_id=conversation_id is not None,
    )

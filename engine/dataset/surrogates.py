"""Unpaired surrogates: a JSON escape of half a UTF-16 pair (``\\ud800``) is valid JSON but not Unicode text.

Python reads one into a string that no UTF-8 file or tokenizer accepts, so it is an error at validation, at its
conversation, pair and field, rather than a crash when the examples are written or tokenized.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from engine.dataset.report import Findings, Location
from engine.dataset.schema import text_id

# UTF-8 cannot encode a surrogate, so in a file that decoded as UTF-8 one can only come from such an escape.
_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")

Path = tuple[str | int, ...]


def may_hold_surrogates(data: bytes) -> bool:
    """False when no string of this JSON text can hold a surrogate: the walk below is then skipped."""
    return _ESCAPE.search(data) is not None


def unpaired(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """(path, the surrogate) for every string, or key, within ``value`` that holds an unpaired surrogate."""
    kind = type(value)
    if kind is str:
        found = _SURROGATE.search(value)
        if found:
            yield path, found.group()
    elif kind is dict:
        for key, item in value.items():
            found = _SURROGATE.search(key)
            if found:
                yield (*path, _escaped(key)), found.group()
            yield from unpaired(item, (*path, key))
    elif kind is list:
        for index, item in enumerate(value):
            yield from unpaired(item, (*path, index))


def field_name(path: Path) -> str:
    """conversation_history[1].content, as the other findings name fields."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else part
    return name


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _report(findings: Findings, where: Location, path: Path, surrogate: str) -> None:
    field = field_name(path) or None
    findings.error(
        "unpaired_surrogate",
        f"{field or 'a text'} holds an unpaired surrogate (\\u{ord(surrogate):04x}), not valid Unicode text "
        "(half of a character escaped as a UTF-16 pair: was the text cut there?)",
        replace(where, field=field),
    )


def check_conversation(raw: Any, index: int, findings: Findings) -> None:
    """Each unpaired surrogate in conversations[index] of a brightrun document, at its pair and field."""
    meta = raw.get("conversation_metadata") if isinstance(raw, dict) else None
    where = Location(conversation_index=index, conversation_id=text_id(meta.get("conversation_id")) if meta else None)
    for path, surrogate in unpaired(raw):
        if len(path) >= 2 and path[0] == "training_pairs" and isinstance(path[1], int):
            pair = raw["training_pairs"][path[1]]
            pair_id = text_id(pair.get("id")) if isinstance(pair, dict) else None
            _report(findings, replace(where, pair_index=path[1], pair_id=pair_id), path[2:], surrogate)
        else:
            _report(findings, where, path, surrogate)


def check_value(value: Any, where: Location, findings: Findings, *, pair: bool = False, prefix: Path = ()) -> None:
    """Each unpaired surrogate in a JSONL line, or in a field beside a document's conversations (``prefix``).

    ``pair``: the value is a pair, so its id goes into the location.
    """
    if pair and isinstance(value, dict):
        where = replace(where, pair_id=text_id(value.get("id")))
    for path, surrogate in unpaired(value, prefix):
        _report(findings, where, path, surrogate)

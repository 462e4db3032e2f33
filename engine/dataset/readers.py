"""Parsing a dataset file: format detection, JSONL line by line, and JSON errors placed by line and column.

Nothing here raises on bad input: problems become findings located by line and column, with the offending line
and a caret under JSON's own error position.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from engine.config import DatasetFormat
from engine.dataset.report import Findings, Location

EXCERPT_WIDTH = 72  # characters of the offending line shown around the error position
_SAMPLE_LINES = 5  # non-empty lines looked at to tell JSONL from one JSON document
_LONG_LINE = 4_000_000  # bytes: a first line longer than this is a one-line document, not a JSONL record


def detect_format(handle: BinaryIO) -> DatasetFormat:
    """brightrun-lora-v4 (one JSON document), its JSONL export, or chat JSONL, from the first lines."""
    for line in _first_lines(handle):
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(value, dict):
            continue
        if "conversations" in value:
            return DatasetFormat.BRIGHTRUN
        if "messages" in value:
            return DatasetFormat.CHAT_JSONL
        if "_meta" in value or "target_response" in value or "current_user_input" in value:
            return DatasetFormat.BRIGHTRUN_JSONL
    return DatasetFormat.BRIGHTRUN


def _first_lines(handle: BinaryIO) -> list[str]:
    """Up to _SAMPLE_LINES non-empty lines from the start; none past a very long line (a one-line document)."""
    handle.seek(0)
    lines: list[str] = []
    encoding = "utf-8-sig"
    while len(lines) < _SAMPLE_LINES:
        line = handle.readline(_LONG_LINE + 1)
        if not line or len(line) > _LONG_LINE:
            break
        text = line.decode(encoding, "replace")
        encoding = "utf-8"
        if text.strip():
            lines.append(text)
    return lines


def parse_lines(handle: BinaryIO, file: str, findings: Findings) -> Iterator[tuple[int, Any]]:
    """Each non-empty line as a JSON value, with its 1-based line number; bad lines become findings.

    One line at a time, so a line's values can become records before the next is read.
    """
    handle.seek(0)
    for number, line in enumerate(handle, start=1):
        text = line.decode("utf-8-sig" if number == 1 else "utf-8")
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            parse_error(file, exc, findings, line=number, line_text=text)
        except RecursionError:
            findings.error("not_json", "the JSON nests too deeply to read", Location(file, number))


def parse_error(
    file: str,
    exc: json.JSONDecodeError,
    findings: Findings,
    *,
    line: int | None = None,
    column: int | None = None,
    line_text: str | None = None,
) -> None:
    """JSON's error as a finding: at ``line`` and ``column`` in the file when ``exc`` saw only part of it."""
    if line_text is None:
        start = exc.doc.rfind("\n", 0, exc.pos) + 1
        end = exc.doc.find("\n", exc.pos)
        line_text = exc.doc[start : end if end >= 0 else len(exc.doc)]
    if exc.msg.startswith("Unterminated string"):
        message = "not valid JSON: this text never ends (is the file truncated?)"
    else:
        message = f"not valid JSON: {exc.msg}{_hint(exc)}"
    findings.error(
        "not_json",
        message,
        Location(file=file, line=exc.lineno if line is None else line, column=exc.colno if column is None else column),
        _excerpt(line_text, exc.colno),
    )


def _hint(exc: json.JSONDecodeError) -> str:
    """What sits at the error position, in words, when JSON's own message does not say."""
    doc, pos = exc.doc, exc.pos
    if pos >= len(doc.rstrip()):
        return " (the file ends early: is it truncated?)"
    found = doc[pos]
    before = doc[:pos].rstrip()
    if found in "}]" and before.endswith(","):
        return f" (a trailing comma before {found!r})"
    if exc.msg == "Extra data" and found == "{":
        return " (another JSON object follows the first: if this is JSONL, leave --format out)"
    if pos == 0 and found not in "{[":
        return f" (the file starts with {doc.splitlines()[0][:30]!r}: it is not JSON)"
    return f" (found '{found}')" if found.isprintable() and found != "'" else f" (found {found!r})"


def _excerpt(line: str, column: int) -> str:
    """The line around ``column`` (1-based) and a caret under it; long lines are cut to EXCERPT_WIDTH."""
    text = "".join(ch if ch.isprintable() else " " for ch in line.rstrip("\r\n"))
    index = max(0, column - 1)
    start = max(0, min(index - EXCERPT_WIDTH // 2, len(text) - EXCERPT_WIDTH))
    shown = text[start : start + EXCERPT_WIDTH]
    prefix = "…" if start > 0 else ""
    suffix = "…" if start + EXCERPT_WIDTH < len(text) else ""
    caret = " " * (len(prefix) + index - start) + "^"
    return f"{prefix}{shown}{suffix}\n{caret}"

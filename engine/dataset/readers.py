"""Reading a dataset file: bytes to text (UTF-8, BOM, CRLF), format detection, and JSON / JSONL parsing.

Nothing here raises on bad input: problems become findings located by line and column, with the offending line
and a caret under JSON's own error position.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import DatasetFormat
from engine.dataset.errors import DatasetError
from engine.dataset.report import Findings, Location
from engine.dataset.source import open_regular
from engine.dataset.surrogates import may_hold_surrogates

EXCERPT_WIDTH = 72  # characters of the offending line shown around the error position
_SAMPLE_LINES = 5  # non-empty lines looked at to tell JSONL from one JSON document
_LONG_LINE = 1_000_000


@dataclass(slots=True)
class Source:
    path: Path
    text: str
    data: bytes
    may_hold_surrogates: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def read_source(path: Path, findings: Findings) -> Source | None:
    """The file's text; None (with a finding) when it is empty, binary or not UTF-8; DatasetError if unreadable."""
    try:
        with open_regular(path) as handle:
            data = handle.read()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    where = Location(file=path.name)
    if not data or data.isspace():
        findings.error("empty_file", "the file is empty: there is nothing to train", where)
        return None
    if b"\x00" in data[:65536]:
        findings.error("not_text", "the file holds binary data, not JSON text", where)
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        findings.error(
            "not_text",
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded (save the file as UTF-8)",
            Location(file=path.name, line=line, column=column),
        )
        return None
    return Source(path, text, data, may_hold_surrogates(data))


def detect_format(text: str) -> DatasetFormat:
    """brightrun-lora-v4 (one JSON document), its JSONL export, or chat JSONL, from the first lines."""
    for line in _first_lines(text):
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


def _first_lines(text: str) -> list[str]:
    """Up to _SAMPLE_LINES non-empty lines from the start; none past a very long line (a one-line document)."""
    lines: list[str] = []
    start = 0
    while start < len(text) and len(lines) < _SAMPLE_LINES:
        end = text.find("\n", start, start + _LONG_LINE)
        if end < 0 and len(text) - start > _LONG_LINE:
            break
        end = len(text) if end < 0 else end
        if text[start:end].strip():
            lines.append(text[start:end])
        start = end + 1
    return lines


def parse_document(source: Source, findings: Findings) -> tuple[bool, Any]:
    """(True, value) for the whole file as one JSON value; (False, None) with a located finding otherwise."""
    try:
        return True, json.loads(source.text)
    except json.JSONDecodeError as exc:
        _parse_error(source, exc, findings)
    except RecursionError:
        findings.error("not_json", "the JSON nests too deeply to read", Location(file=source.path.name))
    return False, None


def parse_lines(source: Source, findings: Findings) -> list[tuple[int, Any]]:
    """Each non-empty line as a JSON value, with its 1-based line number; bad lines become findings."""
    values = []
    for number, line in enumerate(source.text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            _parse_error(source, exc, findings, line_offset=number - 1, line_text=line)
        except RecursionError:
            findings.error("not_json", "the JSON nests too deeply to read", Location(source.path.name, number))
    return values


def _parse_error(
    source: Source, exc: json.JSONDecodeError, findings: Findings, *, line_offset: int = 0, line_text: str | None = None
) -> None:
    line = exc.lineno + line_offset
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
        Location(file=source.path.name, line=line, column=exc.colno),
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

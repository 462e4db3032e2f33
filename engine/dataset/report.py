"""Findings and the validation report: every error and warning with where it is, as text and as JSON."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

MAX_ERRORS = 50  # reported one by one; the rest are counted
MAX_LOCATIONS = 5  # shown per kind of warning


def short_id(value: str, width: int = 12) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a finding is: a file position (parse errors, JSONL lines) and/or a path into the records."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    conversation_index: int | None = None
    conversation_id: str | None = None
    pair_index: int | None = None
    pair_id: str | None = None
    field: str | None = (
        None  # within the pair (or the conversation, or the document), e.g. conversation_history[2].role
    )

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__slots__ if getattr(self, key) is not None}

    def __str__(self) -> str:
        parts = []
        if self.line is not None:
            position = f"line {self.line}" + (f", column {self.column}" if self.column is not None else "")
            parts.append(f"{self.file}: {position}" if self.file else position)
        if self.conversation_index is not None:
            name = f" ({short_id(self.conversation_id, 9)})" if self.conversation_id else ""
            parts.append(f"conversations[{self.conversation_index}]{name}")
        if self.pair_index is not None:
            name = f" ({short_id(self.pair_id, 30)})" if self.pair_id else ""
            parts.append(f"training_pairs[{self.pair_index}]{name}")
        elif self.pair_id:
            parts.append(f"pair {short_id(self.pair_id, 30)}")
        if self.field:
            parts.append(self.field)
        return " › ".join(parts) or "the file"


@dataclass(frozen=True, slots=True)
class Finding:
    """An error: something that stops the file from being trained."""

    code: str
    message: str
    location: Location | None = None
    excerpt: str | None = None  # the offending line with a caret under the position (parse errors)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "location": self.location.to_dict() if self.location else None,
        }
        if self.excerpt:
            data["excerpt"] = self.excerpt
        return data


@dataclass(slots=True)
class WarningGroup:
    """One kind of suspicious content: how often it occurs, and the first few places."""

    code: str
    message: str
    count: int = 0
    locations: list[Location] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "count": self.count,
            "locations": [loc.to_dict() for loc in self.locations],
        }


class Findings:
    """Collects errors (up to MAX_ERRORS, the rest counted) and warnings (counted by code) in one pass."""

    def __init__(self) -> None:
        self.errors: list[Finding] = []
        self.errors_omitted = 0
        self.warnings: dict[str, WarningGroup] = {}

    def error(self, code: str, message: str, location: Location | None = None, excerpt: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(Finding(code, message, location, excerpt))
        else:
            self.errors_omitted += 1

    def warn(self, code: str, location: Location | None = None, *, count: int = 1) -> None:
        group = self.warnings.setdefault(code, WarningGroup(code, ""))
        group.count += count
        if location is not None and len(group.locations) < MAX_LOCATIONS:
            group.locations.append(location)

    def describe(self, code: str, message: Callable[[int], str]) -> None:
        """Set the summary of a kind of warning from its final count."""
        if code in self.warnings:
            self.warnings[code].message = message(self.warnings[code].count)

    def merge(self, other: Findings) -> None:
        """Take in what ``other`` found (read apart, to be kept or dropped whole)."""
        for finding in other.errors:
            self.error(finding.code, finding.message, finding.location, finding.excerpt)
        self.errors_omitted += other.errors_omitted
        for code, group in other.warnings.items():
            mine = self.warnings.setdefault(code, WarningGroup(code, group.message))
            mine.count += group.count
            mine.locations.extend(group.locations[: MAX_LOCATIONS - len(mine.locations)])

    @property
    def has_errors(self) -> bool:
        return bool(self.errors) or self.errors_omitted > 0


@dataclass(slots=True)
class ValidationReport:
    """What validation found in one file, and what conversion would make of it."""

    path: str
    format: str | None = None
    mode: str | None = None
    max_seq_length: int | None = None
    conversations: int = 0
    pairs: int = 0
    trainable_pairs: int = 0
    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    tokens_estimated: bool = True
    tokenizer: str | None = None
    read: bool = False  # the file parsed into records (possibly with schema errors)
    errors: list[Finding] = field(default_factory=list)
    errors_omitted: int = 0
    warnings: list[WarningGroup] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.errors_omitted

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "path": self.path,
            "format": self.format,
            "mode": self.mode,
            "max_seq_length": self.max_seq_length,
            "conversations": self.conversations,
            "pairs": self.pairs,
            "trainable_pairs": self.trainable_pairs,
            "examples": self.examples,
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "tokens_estimated": self.tokens_estimated,
            "tokenizer": self.tokenizer,
            "errors": [e.to_dict() for e in self.errors],
            "errors_omitted": self.errors_omitted,
            "warnings": [w.to_dict() for w in self.warnings],
        }

    def summary(self) -> str:
        """One line: what the file holds."""
        if not self.read:
            return f"could not be read as {self.format or 'JSON or JSONL'}"
        what = f"{self.format}, {plural(self.conversations, 'conversation')}"
        unit = "assistant turn" if self.format == "chat-jsonl" else "pair"
        return f"{what}, {plural(self.pairs, unit)} ({self.trainable_pairs:,} trainable)"

    def token_line(self) -> str:
        how = "estimated at ≈4 characters per token" if self.tokens_estimated else f"tokenizer {self.tokenizer}"
        return (
            f"{plural(self.examples, 'example')} in {self.mode} mode: {self.tokens:,} tokens, "
            f"{self.trained_tokens:,} trained ({how})"
        )

    def format_text(self, width: int | None = None) -> str:
        """The report for people: errors with their places, then warnings by kind, then the verdict.

        ``width`` wraps long lines (continuations indented); None leaves every line whole.
        """
        out: list[str] = []

        def emit(text: str, indent: str = "") -> None:
            if width is None or len(indent + text) <= width:
                out.append(indent + text)
            else:
                out.extend(textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "    "))

        emit(f"{self.path}: {self.summary()}")
        if self.ok:
            emit(self.token_line())
        for error in self.errors:
            emit(f"error [{error.code}] {error.message}")
            if error.location:
                emit(f"at {error.location}", "    ")
            if error.excerpt:
                out.extend("    " + row for row in error.excerpt.splitlines())
        if self.errors_omitted:
            emit(f"… and {self.errors_omitted:,} more errors")
        for group in self.warnings:
            emit(f"warning [{group.code}] ×{group.count:,}: {group.message}")
            for place in _grouped(group.locations, group.message):
                emit(f"at {place}", "    ")
            if group.count > len(group.locations) > 0:
                emit(f"… and {group.count - len(group.locations):,} more", "    ")
        emit(self.verdict())
        return "\n".join(out)

    def verdict(self) -> str:
        errors = len(self.errors) + self.errors_omitted
        if errors:
            return f"refused: {plural(errors, 'error')}; nothing can be trained until they are fixed"
        kinds = f", {plural(len(self.warnings), 'kind')} of warning" if self.warnings else ", no warnings"
        unit = "trainable assistant turn" if self.format == "chat-jsonl" else "trainable pair"
        return f"ok: {plural(self.trainable_pairs, unit)}{kinds}"


def _grouped(locations: list[Location], message: str) -> list[str]:
    """Locations that differ only by pair, on one line: conversations[0] (24af15f9…) › training_pairs[1], [3].

    A field the message already names is left out.
    """
    lines: dict[str, list[str]] = {}
    for loc in locations:
        if loc.pair_index is None or loc.line is not None:
            lines.setdefault(str(loc), [])
            continue
        head = str(replace(loc, pair_index=None, pair_id=None, field=None))
        tail = f" › {loc.field}" if loc.field and loc.field not in message else ""
        lines.setdefault(head + "\0" + tail, []).append(str(loc.pair_index))
    shown = []
    for key, pairs in lines.items():
        head, _, tail = key.partition("\0")
        shown.append(f"{head} › training_pairs[{'], ['.join(pairs)}]{tail}" if pairs else head)
    return shown


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"

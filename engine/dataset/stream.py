"""One JSON document read a piece at a time: its top-level members, and one array's items one by one.

A brightrun file is one document of thousands of conversations. Parsed whole, it is held three times over
(the bytes, the text at up to four bytes a character, every object); here only the text of the conversation
being parsed is held, and each conversation can become records and be dropped before the next is read.

Each value is parsed by ``json``'s own scanner, so values, errors and their messages are the ones
``json.loads`` gives; errors carry the line and column in the whole file.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

CHUNK = 1 << 20
_CONTEXT = 256  # characters kept before the value being parsed, for an error's excerpt and hints
_EXCERPT_AFTER = 80  # characters of an error's line past the error, more than its excerpt shows
_NEAR_END = 32  # an error (or a number) this close to the end of the text read so far may just be cut off
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as the json module defines it
_DECODER = json.JSONDecoder()


class DocumentError(Exception):
    """A JSON syntax error, placed in the whole file; ``error`` is json's own, relative to ``error.doc``."""

    def __init__(self, error: json.JSONDecodeError, line: int, column: int) -> None:
        super().__init__(f"{error.msg}: line {line} column {column}")
        self.error = error
        self.line = line
        self.column = column


class JsonStream:
    """A UTF-8 JSON document, parsed value by value from a binary file without holding all of its text."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self._text = ""
        self._pos = 0
        self._mark = 0  # where the value being parsed starts: text before it (less _CONTEXT) may be dropped
        self._eof = False
        self._newlines_read = 0  # counted in the bytes, where it is fast; the text's are counted on an error only
        self._columns_dropped = 0  # characters dropped from the first line of what is kept

    def object_follows(self) -> bool:
        """True (and the object opened) when the document is an object; False when it is any other value."""
        if self._peek() != "{":
            return False
        self._pos += 1
        return True

    def members(self) -> Iterator[str]:
        """Each key of the opened object, the stream left at its value: the caller reads it (``value``/``items``)."""
        if self._peek() == "}":
            self._pos += 1
            return
        while True:
            if self._peek() != '"':
                raise self._error("Expecting property name enclosed in double quotes")
            key = self.value()
            if self._peek() != ":":
                raise self._error("Expecting ':' delimiter")
            self._pos += 1
            yield key
            found = self._peek()
            self._pos += 1
            if found == "}":
                return
            if found != ",":
                self._pos -= 1
                raise self._error("Expecting ',' delimiter")

    def items(self) -> Iterator[Any] | None:
        """The array that follows, one item at a time; None, with nothing read, when an array does not follow."""
        if self._peek() != "[":
            return None
        self._pos += 1
        return self._items()

    def _items(self) -> Iterator[Any]:
        if self._peek() == "]":
            self._pos += 1
            return
        while True:
            yield self.value()
            found = self._peek()
            self._pos += 1
            if found == "]":
                return
            if found != ",":
                self._pos -= 1
                raise self._error("Expecting ',' delimiter")

    def value(self) -> Any:
        """The next whole value (RecursionError when it nests deeper than Python can parse)."""
        self._peek()
        self._mark = self._pos
        while True:
            try:
                value, end = _DECODER.raw_decode(self._text, self._pos)
            except json.JSONDecodeError as exc:
                cut_off = exc.pos >= len(self._text) - _NEAR_END or exc.msg.startswith("Unterminated string")
                if cut_off and self._read():
                    continue
                raise self._located(exc) from None
            if end > len(self._text) - _NEAR_END and self._read():
                continue  # a number at the end of what was read may go on in the next piece
            self._pos = end
            return value

    def finish(self) -> None:
        """Nothing but whitespace may follow the document."""
        if self._peek():
            raise self._error("Extra data")

    def _peek(self) -> str:
        """The next character that is not whitespace ('' at the end of the file); the position moves to it."""
        while True:
            self._pos = _WHITESPACE.match(self._text, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._text) or not self._read():
                return self._text[self._pos : self._pos + 1]

    def _read(self) -> bool:
        """More text; False (and nothing changed) at the end of the file. What was parsed is dropped first, but
        for some context, so the text held stays about the size of the value being parsed."""
        if self._eof:
            return False
        cut = min(self._mark, self._pos) - _CONTEXT
        # Reading as much again as is kept keeps re-parsing a value that spans many pieces linear in its size.
        data = self._handle.read(max(CHUNK, len(self._text) - max(cut, 0)))
        if not data:
            self._eof = True
            self._decoder.decode(b"", final=True)  # the file was checked as UTF-8: nothing is left over
            return False
        if cut > 0:
            last = self._text.rfind("\n", 0, cut)
            self._columns_dropped = cut - last - 1 if last >= 0 else self._columns_dropped + cut
            self._text = self._text[cut:]
            self._pos -= cut
            self._mark -= cut
        self._text += self._decoder.decode(data)
        self._newlines_read += data.count(b"\n")
        return True

    def _error(self, message: str) -> DocumentError:
        return self._located(json.JSONDecodeError(message, self._text, self._pos))

    def _located(self, exc: json.JSONDecodeError) -> DocumentError:
        pos = exc.pos
        # The excerpt shows the error's line on both sides of it: read on to the line's end, or far enough.
        while len(self._text) - pos < _EXCERPT_AFTER and self._text.find("\n", pos) < 0:
            before = self._pos
            if not self._read():
                break
            pos -= before - self._pos
        if exc.doc is not self._text:
            exc = json.JSONDecodeError(exc.msg, self._text, pos)
        column = exc.colno + (self._columns_dropped if exc.lineno == 1 else 0)
        lines_dropped = self._newlines_read - self._text.count("\n")
        return DocumentError(exc, lines_dropped + exc.lineno, column)

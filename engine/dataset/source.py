"""Opening a dataset file (a regular file: a FIFO or a device is named, not read) and checking that it is text."""

from __future__ import annotations

import codecs
import hashlib
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from engine.dataset.errors import DatasetError
from engine.dataset.report import Findings, Location
from engine.dataset.surrogates import may_hold_surrogates

CHUNK = 1 << 20

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(path: Path, mode: int) -> DatasetError:
    kind = next((name for test, name in _KINDS if test(mode)), "an unknown kind of file")
    link = f" (it links to {path.resolve()})" if path.is_symlink() else ""
    return DatasetError(f"{path} is {kind}, not a regular file{link}")


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading in binary; DatasetError naming what it is when it is not a regular file.

    Symlinks are followed: a link to a regular file is read. The check comes before opening, because opening
    a FIFO waits for a writer and reading /dev/zero never ends; the file is opened non-blocking and checked
    again, in case it was swapped for something else in between.
    """
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode)
    return os.fdopen(fd, "rb")


@dataclass(slots=True)
class Source:
    """A dataset file checked to be UTF-8 text: what the manifest records of it."""

    path: Path
    size: int
    sha256: str
    may_hold_surrogates: bool  # a \ud800-style escape occurs somewhere: the values must be checked


def scan_source(handle: BinaryIO, path: Path, findings: Findings) -> Source | None:
    """The file read once, a megabyte at a time: None (with a finding) when it is empty, binary or not UTF-8.

    Nothing of it is kept but its size, its sha256 and whether it holds surrogate escapes, so a file far
    larger than memory is checked before anything is parsed.
    """
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    where = Location(file=path.name)
    size = lines = column = 0  # lines and characters read so far, to place a byte that is not UTF-8
    blank = True
    escapes = False
    tail = b""
    while True:
        chunk = handle.read(CHUNK)
        if size == 0 and b"\x00" in chunk[:65536]:
            findings.error("not_text", "the file holds binary data, not JSON text", where)
            return None
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            lines, column = _advance(lines, column, exc.object[: exc.start].decode("utf-8"))
            findings.error(
                "not_text",
                f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} cannot be decoded (save the file as UTF-8)",
                replace(where, line=lines + 1, column=column + 1),
            )
            return None
        if not chunk:
            break
        lines, column = _advance(lines, column, text)
        digest.update(chunk)
        size += len(chunk)
        blank = blank and chunk.isspace()
        escapes = escapes or may_hold_surrogates(tail + chunk[:8]) or may_hold_surrogates(chunk)
        tail = chunk[-8:]
    if blank:
        findings.error("empty_file", "the file is empty: there is nothing to train", where)
        return None
    return Source(path, size, digest.hexdigest(), escapes)


def _advance(lines: int, column: int, text: str) -> tuple[int, int]:
    newlines = text.count("\n")
    if newlines:
        return lines + newlines, len(text) - text.rfind("\n") - 1
    return lines, column + len(text)

"""Partial files: where a download or an upload is written before it is renamed into place, whole and verified.

Whoever can write to the destination folder could plant a link at a partial file's name, pointing at a file
elsewhere: writing through it would overwrite that file. A new partial file is therefore created exclusively
under a fresh name (which also keeps two writers of one name apart), and one resumed by its fixed name is
opened without following a link and only when it is a plain file of its own.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

from engine import EngineError

SUFFIX = ".partial"


class UnsafePartial(EngineError):
    """A partial file's name taken by a link or something other than a plain file: refused, never followed."""


def new_partial(target: Path) -> tuple[BinaryIO, Path]:
    """A new, empty partial file beside ``target`` (``.NAME.<random>.partial``), open for writing, and its path."""
    path = target.with_name(f".{target.name[:200]}.{secrets.token_hex(8)}{SUFFIX}")  # within NAME_MAX (255)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    return os.fdopen(fd, "wb"), path


def open_resumable(path: Path) -> BinaryIO:
    """``path`` open for appending to what an earlier, cut-off download left there (created when absent).

    UnsafePartial when a link, a hard-linked file or anything but a plain file has the name.
    """
    refusal = (
        f"{path}: a link or something other than a plain file stands where lorapod keeps a download in "
        "progress; lorapod never writes through it. Remove it and download again"
    )
    # O_NONBLOCK: a FIFO planted there fails at once instead of blocking until someone reads it.
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise UnsafePartial(refusal) from None
        raise
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:
        os.close(fd)
        raise UnsafePartial(refusal)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab")

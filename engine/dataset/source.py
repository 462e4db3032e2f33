"""Opening a dataset file: regular files only, so a FIFO, a device or a socket is named instead of read."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from engine.dataset.errors import DatasetError

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

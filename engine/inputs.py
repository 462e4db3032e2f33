"""Files uploaded into a job's inputs/ (the dataset): kept only whole and with the sha256 announced.

Each upload is written to a partial file of its own (engine.partials), renamed into place once verified: two
uploads of one name never write into one file, and the last to finish is the one kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from engine.partials import new_partial

MAX_INPUT_BYTES = 4 * 1024**3  # a dataset: far larger would be a mistake, and the proxy allows 100 s


class UploadRefused(Exception):
    """An upload that is not kept, with the HTTP status that says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def receive_input(
    folder: Path, name: str, expected_sha256: str, chunks: AsyncIterator[bytes], *, max_bytes: int = MAX_INPUT_BYTES
) -> int:
    """Store ``chunks`` as ``folder/name`` when their sha256 is ``expected_sha256``; the size stored.

    UploadRefused for a body too large or with another sha256. Whatever ends the upload early (that, a client
    gone mid-body, a full disk) leaves nothing behind.
    """
    await run_in_threadpool(folder.mkdir, parents=True, exist_ok=True)
    handle, temp = await run_in_threadpool(new_partial, folder / name)
    digest, size = hashlib.sha256(), 0
    try:
        with handle:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadRefused(413, f"larger than {max_bytes} bytes")
                digest.update(chunk)
                await run_in_threadpool(handle.write, chunk)
        if digest.hexdigest() != expected_sha256:
            raise UploadRefused(422, "the body's sha256 differs from X-Content-SHA256")
        await run_in_threadpool(temp.replace, folder / name)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return size

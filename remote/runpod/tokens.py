"""Pod API tokens, kept on this machine only: one file per pod, readable by its owner alone, in the data dir.

A job's attempts (with their handles) sync to Postgres, where a token would let whoever reads the table
cancel the job or fetch its logs and packages; so the token a launch makes lives here, found again by pod id.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from remote.provider import ProviderError

_POD_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class PodTokens:
    """The pod API token of each pod launched from this machine, in ``folder`` (0700, files 0600)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, pod_id: str) -> Path:
        if not _POD_ID.fullmatch(pod_id):
            raise ProviderError(f"not a pod id: {pod_id!r}")
        return self.folder / pod_id

    def save(self, pod_id: str, token: str) -> None:
        path = self._path(pod_id)
        temp = path.with_name(f".{pod_id}.{secrets.token_hex(8)}.partial")
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(token)
            temp.replace(path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise ProviderError(f"cannot keep pod {pod_id}'s API token in {self.folder}: {exc.strerror}") from None

    def load(self, pod_id: str) -> str | None:
        try:
            return self._path(pod_id).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ProviderError(f"cannot read pod {pod_id}'s API token in {self.folder}: {exc.strerror}") from None

    def forget(self, pod_id: str) -> None:
        self._path(pod_id).unlink(missing_ok=True)

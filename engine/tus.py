"""Resumable uploads over TUS 1.0.0 — the protocol Supabase Storage speaks at /storage/v1/upload/resumable.

An upload is created once (``POST``), then sent in fixed chunks (``PATCH`` with ``Upload-Offset``). After a
dropped connection, a timeout or a server error, the client asks the server how much it holds (``HEAD``)
and goes on from there, backing off between attempts; it gives up only after ``max_attempts`` failures in a
row without progress. The upload's id is kept in a small JSON state file, keyed by the file's identity
(object, size and sha256), so a later process — the engine restarted on the same workdir — resumes it too.
The file is streamed a megabyte at a time; no chunk is ever held whole.

Why not tuspy (the TUS client on PyPI): it pulls in requests, aiohttp and tinydb beside the httpx this
project already uses, sets no timeouts (a half-open connection hangs the upload forever) and retries only
some failures. This module is that client's core, on httpx, with timeouts and one retry policy.

Headers given to the client (the credentials) are sent and never logged; the state file holds upload ids,
not URLs or keys.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

from engine.artifacts import ArtifactStoreError

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
CHUNK_SIZE = 6 * 1024 * 1024  # Supabase Storage takes exactly 6 MB chunks
_PIECE = 1 << 20
_RETRYABLE = frozenset({409, 423, 429, 500, 502, 503, 504})  # 409: offset mismatch; 423: upload busy


class TusError(ArtifactStoreError):
    """A resumable upload that the server refused, or that kept failing."""


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """The ``Upload-Metadata`` header: ``key base64(value)`` pairs, comma-separated."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items())


@dataclass
class TusClient:
    endpoint: str  # …/storage/v1/upload/resumable
    headers: Mapping[str, str]  # credentials and server options (x-upsert); sent, never logged
    http: httpx.Client
    chunk_size: int = CHUNK_SIZE
    state_file: Path | None = None
    max_attempts: int = 8
    backoff_s: float = 0.5
    max_backoff_s: float = 15.0
    sleep: Callable[[float], None] = field(default=time.sleep)

    def upload(self, path: Path, *, metadata: Mapping[str, str], fingerprint: str) -> int:
        """Send ``path`` (resuming an earlier upload of the same file); returns the bytes sent by this call."""
        size = path.stat().st_size
        url, offset = self._resume(fingerprint)
        if url is None:
            url, offset = self._create(size, metadata), 0
            self._remember(fingerprint, url)
        sent, failures, delay = 0, 0, self.backoff_s
        with path.open("rb") as source:
            while offset < size:
                length = min(self.chunk_size, size - offset)
                try:
                    response = self._request(
                        "PATCH", url, content=_pieces(source, offset, length), offset=offset,
                        Content_Length=str(length),
                    )  # fmt: skip
                except httpx.TransportError as exc:
                    problem = f"{type(exc).__name__}"
                else:
                    if response.status_code in (200, 204):
                        new_offset = int(response.headers.get("upload-offset", offset + length))
                        sent += max(new_offset - offset, 0)
                        offset, failures, delay = new_offset, 0, self.backoff_s
                        continue
                    if response.status_code in (404, 410):  # the server dropped the upload: start it again
                        log.warning("the server no longer holds the upload of %s; starting it again", path.name)
                        url, offset = self._create(size, metadata), 0
                        self._remember(fingerprint, url)
                        continue
                    if response.status_code not in _RETRYABLE:
                        raise TusError(f"{path.name}: upload refused ({_describe(response)})")
                    problem = _describe(response)
                failures += 1
                if failures >= self.max_attempts:
                    raise TusError(
                        f"{path.name}: upload failed {failures} times in a row at byte {offset:,} of {size:,} "
                        f"({problem}); run it again to resume from there"
                    )
                log.warning(
                    "%s: the chunk from byte %s of %s failed (%s); resuming in %.1f s from where the server stands",
                    path.name, f"{offset:,}", f"{size:,}", problem, delay,
                )  # fmt: skip
                self.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                offset = self._offset(url, fallback=offset)
        self._forget(fingerprint)
        return sent

    # --- protocol ---------------------------------------------------------------------------------------

    def _request(
        self, method: str, url: str, *, content: bytes | Iterator[bytes] = b"", offset: int | None = None, **extra: str
    ) -> httpx.Response:
        headers = {**self.headers, "Tus-Resumable": TUS_VERSION}
        headers.update({name.replace("_", "-"): value for name, value in extra.items()})
        if offset is not None:
            headers["Upload-Offset"] = str(offset)
            headers["Content-Type"] = "application/offset+octet-stream"
        return self.http.request(method, url, content=content, headers=headers)

    def _create(self, size: int, metadata: Mapping[str, str]) -> str:
        try:
            response = self._request(
                "POST", self.endpoint, Upload_Length=str(size), Upload_Metadata=encode_metadata(metadata)
            )
        except httpx.TransportError as exc:
            reason = type(exc).__name__
            raise TusError(f"cannot start the upload ({reason}): the storage server is unreachable") from None
        location = response.headers.get("location")
        if response.status_code != 201 or not location:
            raise TusError(f"the storage server refused to start the upload ({_describe(response)})")
        return str(httpx.URL(self.endpoint + "/").join(location))

    def _offset(self, url: str, *, fallback: int) -> int:
        """How many bytes the server holds (``fallback`` when it cannot say right now)."""
        try:
            response = self._request("HEAD", url)
        except httpx.TransportError:
            return fallback
        if response.status_code in (200, 204) and "upload-offset" in response.headers:
            return int(response.headers["upload-offset"])
        return fallback

    def _resume(self, fingerprint: str) -> tuple[str | None, int]:
        upload_id = self._state().get(fingerprint)
        if not upload_id:
            return None, 0
        url = f"{self.endpoint}/{upload_id}"
        try:
            response = self._request("HEAD", url)
        except httpx.TransportError:
            return None, 0
        if response.status_code in (200, 204) and "upload-offset" in response.headers:
            offset = int(response.headers["upload-offset"])
            log.info("resuming an earlier upload at byte %s", f"{offset:,}")
            return url, offset
        return None, 0

    # --- state: upload ids by file identity ------------------------------------------------------------

    def _state(self) -> dict[str, str]:
        if self.state_file is None:
            return {}
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, state: dict[str, str]) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        tmp.replace(self.state_file)

    def _remember(self, fingerprint: str, url: str) -> None:
        prefix = self.endpoint.rstrip("/") + "/"
        upload_id = url[len(prefix) :] if url.startswith(prefix) else ""
        if upload_id:
            self._write_state({**self._state(), fingerprint: upload_id})

    def _forget(self, fingerprint: str) -> None:
        state = self._state()
        if state.pop(fingerprint, None) is not None:
            self._write_state(state)


def _pieces(source: BinaryIO, offset: int, length: int) -> Iterator[bytes]:
    """One chunk of the file, read a megabyte at a time as the request sends it."""
    source.seek(offset)
    while length > 0:
        piece = source.read(min(_PIECE, length))
        if not piece:
            return
        length -= len(piece)
        yield piece


def _describe(response: httpx.Response) -> str:
    """Status and the server's message (Supabase sends JSON); never the URL."""
    message = ""
    try:
        data = response.json()
        if isinstance(data, dict):
            message = str(data.get("message") or data.get("error") or "")
    except ValueError:
        message = response.text[:200].strip()
    return f"HTTP {response.status_code}{': ' + message if message else ''}"

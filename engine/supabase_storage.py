"""Supabase Storage as an artifact store: small files through supabase-py, large ones resumably over TUS.

- Upload up to 6 MB: supabase-py's storage client (``POST /storage/v1/object/{bucket}/{key}``), with
  ``x-upsert`` as the string "true" (supabase-py crashes on a bool), an explicit content type (its default
  is text/plain) and a 5-minute timeout (its default is 20 s), the file streamed from disk.
- Upload above 6 MB: TUS at ``/storage/v1/upload/resumable`` in 6 MB chunks (``engine.tus``); it survives a
  dropped connection, and a restarted engine resumes it from its state file.
- Download: streamed over httpx from the same REST endpoint and hashed as it arrives. supabase-py's
  ``download`` returns the whole file as bytes, and a full package runs to gigabytes.
- Signed URLs and object info (the sha256 recorded in the object's metadata) through supabase-py.

On the user's machine the key is the service-role key. In a pod it is the public anon key, and the bearer
``token`` a JWT that lets it write only ``jobs/<job id>/`` (store.artifacts.upload_token): Supabase's gateway
asks every request for a project key, and Storage runs it as the token's role under row-level security.
The project URL, the key and the token stay in this object and in request headers. Messages name the
bucket and key only, and the project URL and key are masked in httpx's and httpcore's own log lines.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from engine.artifacts import (
    ArtifactStore,
    ArtifactStoreError,
    StoredArtifact,
    check_sha256,
    content_type,
    object_key,
    supabase_uri,
)
from engine.checksums import sha256_file
from engine.partials import new_partial
from engine.tus import CHUNK_SIZE, TusClient

SMALL_LIMIT = 6 * 1024 * 1024
TIMEOUT = httpx.Timeout(300.0, connect=15.0)
_HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy", "hpack.hpack")


class _Mask(logging.Filter):
    """Replaces secrets in the log records of the HTTP libraries with a placeholder."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        masked = message
        for secret in sorted(self.secrets, key=len, reverse=True):
            masked = masked.replace(secret, "<supabase>")
        if masked != message:
            record.msg, record.args = masked, None
        return True


_MASK = _Mask()
for _name in _HTTP_LOGGERS:
    logging.getLogger(_name).addFilter(_MASK)


def mask_in_logs(*secrets: str) -> None:
    """Keep these strings out of the HTTP libraries' log lines from now on."""
    _MASK.secrets.update(s for s in secrets if s and len(s) >= 4)


class SupabaseStore(ArtifactStore):
    """The ``model-artifacts`` bucket (or another) of one Supabase project."""

    scheme = "supabase"

    def __init__(
        self,
        url: str,
        key: str,
        *,
        bucket: str,
        state_dir: Path | None = None,
        timeout: httpx.Timeout = TIMEOUT,
        small_limit: int = SMALL_LIMIT,
        chunk_size: int = CHUNK_SIZE,
        max_attempts: int = 8,
        token: str | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ArtifactStoreError("SUPABASE_URL must be the project's https:// URL")
        self._base = url.rstrip("/")
        self._key = key
        self.bucket = bucket
        self.state_dir = state_dir
        self.timeout = timeout
        self.small_limit = small_limit
        self.chunk_size = chunk_size
        self.max_attempts = max_attempts
        self._headers = {"Authorization": f"Bearer {token or key}", "apikey": key}
        self._http = httpx.Client(timeout=timeout)
        self._files: Any = None
        mask_in_logs(self._base, key, token or "", urlsplit(self._base).netloc)

    def __repr__(self) -> str:
        return f"SupabaseStore(bucket={self.bucket!r})"

    # --- the interface ----------------------------------------------------------------------------------

    def upload(self, source: Path, job_id: str, *, sha256: str | None = None) -> StoredArtifact:
        key = object_key(job_id, source.name)
        digest = sha256_file(source)
        check_sha256(source.name, digest, sha256)
        size = source.stat().st_size
        kind = content_type(source)
        if size <= self.small_limit:
            self._call(
                f"upload {self.bucket}/{key}",
                lambda: self._bucket().upload(
                    key,
                    source,
                    file_options={
                        "content-type": kind,
                        "upsert": "true",  # a string: supabase-py sends it as a header and crashes on a bool
                        "cache-control": "3600",
                        "metadata": {"sha256": digest},
                    },
                ),
            )
        else:
            self._tus().upload(
                source,
                metadata={
                    "bucketName": self.bucket,
                    "objectName": key,
                    "contentType": kind,
                    "cacheControl": "3600",
                    "metadata": f'{{"sha256": "{digest}"}}',
                },
                fingerprint=f"{self.bucket}/{key}:{size}:{digest}",
            )
        return StoredArtifact(supabase_uri(self.bucket, key), size, digest)

    def download(self, uri: str, dest_dir: Path, *, sha256: str | None = None) -> Path:
        bucket, key = self._split(uri)
        expected = self._expected(uri, sha256)
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / Path(key).name
        digest = hashlib.sha256()
        out, partial = new_partial(target)
        try:
            with (
                out,
                self._http.stream("GET", f"{self._base}/storage/v1/object/{bucket}/{key}", headers=self._headers) as r,
            ):
                if r.status_code != 200:
                    r.read()
                    raise ArtifactStoreError(f"cannot download {bucket}/{key}: {_describe(r)}")
                for chunk in r.iter_bytes(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            check_sha256(target.name, digest.hexdigest(), expected)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise ArtifactStoreError(
                f"cannot download {bucket}/{key}: {type(exc).__name__} (Supabase Storage unreachable)"
            ) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return target

    def recorded_sha256(self, uri: str) -> str | None:
        _, key = self._split(uri)
        info = self._call(f"read {self.bucket}/{key}", lambda: self._bucket().info(key))
        for field in ("metadata", "user_metadata"):
            metadata = info.get(field) if isinstance(info, dict) else None
            if isinstance(metadata, dict) and isinstance(metadata.get("sha256"), str):
                return str(metadata["sha256"])
        return None

    def signed_url(self, uri: str, expires_in: int = 3600) -> str:
        _, key = self._split(uri)
        signed = self._call(f"sign {self.bucket}/{key}", lambda: self._bucket().create_signed_url(key, expires_in))
        url = signed.get("signedURL") or signed.get("signedUrl")
        if not url:
            raise ArtifactStoreError(f"Supabase Storage gave no signed URL for {self.bucket}/{key}")
        return str(url)

    # --- plumbing ---------------------------------------------------------------------------------------

    def _split(self, uri: str) -> tuple[str, str]:
        parts = urlsplit(uri)
        if parts.scheme != self.scheme or not parts.netloc:
            raise ArtifactStoreError(f"not a Supabase Storage artifact: {uri}")
        return parts.netloc, unquote(parts.path).lstrip("/")

    def _bucket(self) -> Any:
        if self._files is None:
            from supabase import create_client
            from supabase.lib.client_options import SyncClientOptions

            options = SyncClientOptions(
                httpx_client=httpx.Client(timeout=self.timeout),
                headers={"Authorization": self._headers["Authorization"]},
            )
            self._files = create_client(self._base, self._key, options=options).storage.from_(self.bucket)
        return self._files

    def _tus(self) -> TusClient:
        return TusClient(
            endpoint=f"{self._base}/storage/v1/upload/resumable",
            headers={**self._headers, "x-upsert": "true"},
            http=self._http,
            chunk_size=self.chunk_size,
            state_file=self.state_dir / "uploads.json" if self.state_dir else None,
            max_attempts=self.max_attempts,
        )

    def _call(self, what: str, action: Any) -> Any:
        """Run a supabase-py call; its errors become ArtifactStoreError with status and message, no URL."""
        from storage3.exceptions import StorageApiError

        try:
            return action()
        except StorageApiError as exc:
            raise ArtifactStoreError(f"Supabase Storage refused to {what}: HTTP {exc.status} {exc.message}") from None
        except httpx.TransportError as exc:
            raise ArtifactStoreError(f"cannot {what}: {type(exc).__name__} (Supabase Storage unreachable)") from None


def _describe(response: httpx.Response) -> str:
    try:
        data = response.json()
        message = str(data.get("message") or data.get("error") or "") if isinstance(data, dict) else ""
    except ValueError:
        message = ""
    return f"HTTP {response.status_code}{': ' + message if message else ''}"

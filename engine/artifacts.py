"""Artifact stores: where a job's packages outlive the machine that made them. One interface, two stores.

- ``LocalStore``: a directory (the embedded default, ``<data dir>/artifacts``); files at
  ``jobs/{job_id}/{name}`` with a ``{name}.sha256`` beside each. URI ``file:///…/jobs/{job_id}/{name}``.
- ``SupabaseStore``: Supabase Storage, the private bucket ``model-artifacts``; objects at
  ``jobs/{job_id}/{name}`` (the seed's ``model-artifacts/jobs/{job_id}/…``), the sha256 in each object's
  user metadata. URI ``supabase://model-artifacts/jobs/{job_id}/{name}`` — no project URL, no key.

Every upload records the file's sha256 (and checks it against the one the caller expects); every download
is verified against the sha256 it is given (the ledger's) or the one recorded on upload, and a file that
does not match is refused and removed. The engine picks its store from the environment
(``store_from_env``): credentials arrive there and nowhere else, and never reach a log, an event or a
package.

Exceptions::

    ArtifactStoreError (EngineError)   a store that cannot be reached, or refuses; the message says why
    └── ChecksumMismatch               a file whose sha256 is not the one recorded
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import quote, unquote, urlsplit

from engine import EngineError
from engine.checksums import CHUNK, sha256_file
from engine.partials import new_partial

if TYPE_CHECKING:
    from engine.supabase_storage import SupabaseStore

DEFAULT_BUCKET = "model-artifacts"
STORE_ENV = "LORAPOD_ARTIFACT_STORE"  # local | supabase
DIR_ENV = "LORAPOD_ARTIFACT_DIR"  # the local store's root
BUCKET_ENV = "LORAPOD_SUPABASE_BUCKET"
URL_ENV = "SUPABASE_URL"
KEY_ENV = "SUPABASE_SERVICE_ROLE_KEY"
TOKEN_ENV = "LORAPOD_SUPABASE_TOKEN"  # a pod's scoped upload credential (a JWT for jobs/<job id>/ alone)
ANON_ENV = "SUPABASE_ANON_KEY"  # the project key Supabase's gateway asks for beside such a credential


class ArtifactStoreError(EngineError):
    """A store that cannot be reached or refuses an upload or download; never carries a credential."""


class ChecksumMismatch(ArtifactStoreError):
    """A file whose sha256 differs from the one recorded for it."""


@dataclass(frozen=True)
class StoredArtifact:
    """Where an upload landed, and what it was."""

    uri: str
    size_bytes: int
    sha256: str


def object_key(job_id: str, name: str) -> str:
    """``jobs/{job_id}/{name}``: where a job's file lives in any store."""
    if not name or "/" in name or name in (".", ".."):
        raise ArtifactStoreError(f"not a file name: {name!r}")
    try:
        job = str(uuid.UUID(str(job_id)))
    except ValueError:
        raise ArtifactStoreError(f"not a job id: {job_id!r}") from None
    return f"jobs/{job}/{name}"


def content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def is_store_uri(text: str | None) -> bool:
    """Whether an artifact's storage path is a store URI (rather than a path in a job's workdir)."""
    return bool(text) and urlsplit(str(text)).scheme in (LocalStore.scheme, "supabase")


def storage_path(uri: str) -> str:
    """What a person copies to find the file: ``model-artifacts/jobs/…`` for Supabase, a path for a folder."""
    parts = urlsplit(uri)
    if parts.scheme == "supabase":
        return f"{parts.netloc}{unquote(parts.path)}"
    if parts.scheme == LocalStore.scheme:
        return unquote(parts.path)
    return uri


class ArtifactStore(ABC):
    """Upload a job's files, download them verified, and share them."""

    scheme: ClassVar[str]

    @abstractmethod
    def upload(self, source: Path, job_id: str, *, sha256: str | None = None) -> StoredArtifact:
        """Store ``source`` as ``jobs/{job_id}/{source.name}`` (replacing it); ChecksumMismatch when ``sha256``
        is given and the file's differs."""

    @abstractmethod
    def download(self, uri: str, dest_dir: Path, *, sha256: str | None = None) -> Path:
        """Copy the file into ``dest_dir``, verified against ``sha256`` or, without it, the recorded one."""

    @abstractmethod
    def recorded_sha256(self, uri: str) -> str | None:
        """The sha256 recorded when the file was uploaded."""

    @abstractmethod
    def signed_url(self, uri: str, expires_in: int = 3600) -> str:
        """A URL that fetches the file without credentials, valid for ``expires_in`` seconds."""

    def storage_path(self, uri: str) -> str:
        return storage_path(uri)

    def _expected(self, uri: str, sha256: str | None) -> str:
        expected = sha256 or self.recorded_sha256(uri)
        if not expected:
            raise ArtifactStoreError(f"{storage_path(uri)}: no sha256 recorded for it, so it cannot be verified")
        return expected


def check_sha256(name: str, got: str, expected: str | None) -> None:
    if expected is not None and got != expected:
        raise ChecksumMismatch(f"{name}: checksum mismatch (got {got[:12]}…, expected {expected[:12]}…)")


class LocalStore(ArtifactStore):
    """A directory of ``jobs/{job_id}/{name}`` files, each with its ``{name}.sha256``."""

    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    def _path(self, uri: str) -> Path:
        parts = urlsplit(uri)
        if parts.scheme != self.scheme:
            raise ArtifactStoreError(f"not a local artifact: {uri}")
        return Path(unquote(parts.path))

    def upload(self, source: Path, job_id: str, *, sha256: str | None = None) -> StoredArtifact:
        target = self.root / object_key(job_id, source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        sidecar = target.with_name(target.name + ".sha256")
        if target.is_file() and sidecar.is_file():  # already there, unchanged: a resumed job uploads again
            recorded = sidecar.read_text(encoding="utf-8").split()[0]
            if recorded == (sha256 or sha256_file(source)) and target.stat().st_size == source.stat().st_size:
                return StoredArtifact(target.as_uri(), target.stat().st_size, recorded)
        digest, size = copy_hashed(source, target)
        try:
            check_sha256(source.name, digest, sha256)
        except ChecksumMismatch:
            target.unlink(missing_ok=True)
            raise
        sidecar.write_text(f"{digest}  {target.name}\n", encoding="utf-8")
        return StoredArtifact(target.as_uri(), size, digest)

    def download(self, uri: str, dest_dir: Path, *, sha256: str | None = None) -> Path:
        source = self._path(uri)
        if not source.is_file():
            raise ArtifactStoreError(f"{source}: not in the artifact store")
        expected = self._expected(uri, sha256)
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / source.name
        copy_hashed(source, target, expected=expected)
        return target

    def recorded_sha256(self, uri: str) -> str | None:
        sidecar = self._path(uri).with_name(self._path(uri).name + ".sha256")
        try:
            return sidecar.read_text(encoding="utf-8").split()[0]
        except (OSError, IndexError):
            return None

    def signed_url(self, uri: str, expires_in: int = 3600) -> str:
        return self._path(uri).as_uri()  # a file on this machine: its path is the link


def copy_hashed(source: Path, target: Path, *, expected: str | None = None) -> tuple[str, int]:
    """Copy under a temporary name, hashing as it goes; renamed into place only when it verifies."""
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as src:
        dst, partial = new_partial(target)
        try:
            with dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
            check_sha256(source.name, digest.hexdigest(), expected)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    partial.replace(target)
    shutil.copymode(source, target)
    return digest.hexdigest(), size


def supabase_uri(bucket: str, key: str) -> str:
    return f"supabase://{bucket}/{quote(key)}"


def store_from_env(environ: Mapping[str, str] | None = None, *, state_dir: Path | None = None) -> ArtifactStore | None:
    """The store ``LORAPOD_ARTIFACT_STORE`` names (None when unset), configured from the environment.

    local: ``LORAPOD_ARTIFACT_DIR``. supabase: ``SUPABASE_URL`` and ``LORAPOD_SUPABASE_BUCKET`` (default
    model-artifacts), with ``SUPABASE_SERVICE_ROLE_KEY`` on the user's machine, or in a pod the scoped
    ``LORAPOD_SUPABASE_TOKEN`` and ``SUPABASE_ANON_KEY``; ``state_dir`` keeps resumable uploads' progress.
    """
    env = os.environ if environ is None else environ
    kind = env.get(STORE_ENV, "").strip().lower()
    if not kind:
        return None
    if kind == "local":
        root = env.get(DIR_ENV, "").strip()
        if not root:
            raise ArtifactStoreError(f"{STORE_ENV}=local needs {DIR_ENV} (the store's folder)")
        return LocalStore(Path(root))
    if kind == "supabase":
        bucket = env.get(BUCKET_ENV) or DEFAULT_BUCKET
        scoped = env.get(TOKEN_ENV, "").strip()
        needed = (URL_ENV, ANON_ENV) if scoped else (URL_ENV, KEY_ENV)
        missing = [name for name in needed if not env.get(name, "").strip()]
        if missing:
            raise ArtifactStoreError(f"{STORE_ENV}=supabase needs {' and '.join(missing)} in the environment")
        key = env[needed[1]].strip()
        return supabase_store(env[URL_ENV].strip(), key, bucket=bucket, state_dir=state_dir, token=scoped or None)
    raise ArtifactStoreError(f"{STORE_ENV} must be local or supabase, not {kind!r}")


def supabase_store(
    url: str, key: str, *, bucket: str = DEFAULT_BUCKET, state_dir: Path | None = None, token: str | None = None
) -> SupabaseStore:
    """A Supabase Storage store (its module, and supabase-py, load only when one is used); ``key`` is the project
    key, ``token`` a narrower credential sent as the bearer in its place."""
    from engine.supabase_storage import SupabaseStore

    return SupabaseStore(url, key, bucket=bucket, state_dir=state_dir, token=token)

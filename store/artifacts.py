"""Model artifacts in the ledger — what each job produced, where it is, its size and checksum — and the
artifact store that keeps them (``engine.artifacts``), as the settings configure it."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import jwt
from sqlmodel import col, select

from engine.artifacts import (
    ANON_ENV,
    BUCKET_ENV,
    DIR_ENV,
    KEY_ENV,
    STORE_ENV,
    TOKEN_ENV,
    URL_ENV,
    ArtifactStore,
    LocalStore,
    supabase_store,
)
from store.db import Ledger
from store.errors import SettingsError
from store.models import ModelArtifact, TrainingJob, utcnow

if TYPE_CHECKING:
    from store.settings import Settings

ARTIFACT_TYPES = ("adapter", "full", "deploy", "checkpoint")
# The database role of a pod's upload credential (store/supabase/migrations/003_lorapod_job_uploads.sql): it may
# write and read back objects under jobs/<its job id>/ in the bucket its token names, and nothing else at all.
UPLOAD_ROLE = "lorapod_job_uploader"


def record_artifact(
    ledger: Ledger,
    job_id: uuid.UUID,
    *,
    artifact_type: str,
    storage_path: str,
    size_bytes: int,
    sha256: str | None,
    base_model: str | None = None,
    lora_config: dict[str, Any] | None = None,
    validation_loss: float | None = None,
    perplexity: float | None = None,
) -> ModelArtifact:
    """Record an artifact; recording the same (job, type, path) again updates it rather than adding a row."""
    if artifact_type not in ARTIFACT_TYPES:
        raise ValueError(f"artifact type must be one of {', '.join(ARTIFACT_TYPES)}, not {artifact_type!r}")
    with ledger.write() as session:
        row = session.exec(
            select(ModelArtifact).where(
                col(ModelArtifact.job_id) == job_id,
                col(ModelArtifact.artifact_type) == artifact_type,
                col(ModelArtifact.storage_path) == storage_path,
            )
        ).first() or ModelArtifact(job_id=job_id, artifact_type=artifact_type, storage_path=storage_path)
        row.size_bytes, row.sha256, row.base_model = size_bytes, sha256, base_model
        row.lora_config = lora_config or {}
        row.validation_loss, row.perplexity = validation_loss, perplexity
        session.add(row)
        job = session.get(TrainingJob, job_id)
        if job is not None:  # the job changed with its artifacts (sync sends them with it)
            job.updated_at = utcnow()
            session.add(job)
    return row


def list_artifacts(ledger: Ledger, job_id: uuid.UUID, artifact_type: str | None = None) -> list[ModelArtifact]:
    statement = select(ModelArtifact).where(col(ModelArtifact.job_id) == job_id)
    if artifact_type is not None:
        statement = statement.where(col(ModelArtifact.artifact_type) == artifact_type)
    with ledger.read() as session:
        return list(session.exec(statement.order_by(col(ModelArtifact.created_at))).all())


def _supabase_credentials(settings: Settings) -> tuple[str, str]:
    if settings.supabase_url is None or settings.supabase_service_role_key is None:
        raise SettingsError(
            "artifact_store is supabase: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (environment or config.toml)"
        )
    return settings.supabase_url.get_secret_value(), settings.supabase_service_role_key.get_secret_value()


def store_environment(settings: Settings) -> dict[str, str]:
    """The environment that tells an engine which artifact store to upload to (credentials included: hand
    it to the engine's process only, never to a log)."""
    if settings.artifact_store == "local":
        return {STORE_ENV: "local", DIR_ENV: str(settings.paths.artifacts_dir)}
    url, key = _supabase_credentials(settings)
    return {STORE_ENV: "supabase", URL_ENV: url, KEY_ENV: key, BUCKET_ENV: settings.supabase_bucket}


def upload_token(settings: Settings, job_id: uuid.UUID, *, valid_for_s: float, now: float | None = None) -> str:
    """A JWT for ``UPLOAD_ROLE`` that lets its holder write ``jobs/<job_id>/`` of the bucket for ``valid_for_s``
    seconds: HS256, signed with the project's JWT secret, which Supabase Storage verifies before it runs the
    request as that role with these claims (its row-level security on storage.objects does the rest)."""
    if settings.supabase_jwt_secret is None:
        raise SettingsError(
            "a RunPod job uploading to Supabase needs SUPABASE_JWT_SECRET (Project Settings → API → JWT secret): "
            "lorapod signs a credential with it that can write only that job's folder, so the service-role key "
            "never leaves this machine"
        )
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": "lorapod",
        "role": UPLOAD_ROLE,
        "job_id": str(job_id),
        "bucket": settings.supabase_bucket,
        "iat": issued,
        "exp": issued + int(valid_for_s),
    }
    return jwt.encode(claims, settings.supabase_jwt_secret.get_secret_value(), algorithm="HS256")


def pod_store_environment(
    settings: Settings, job_id: uuid.UUID, *, valid_for_s: float
) -> tuple[dict[str, str], dict[str, str]]:
    """What a pod needs to upload its job's packages to Supabase Storage: the plain variables, and the secret
    ones (the project URL, its public anon key, and the scoped ``upload_token``), delivered apart."""
    url, _ = _supabase_credentials(settings)
    if settings.supabase_anon_key is None:
        raise SettingsError(
            "a RunPod job uploading to Supabase needs SUPABASE_ANON_KEY (Project Settings → API): Supabase's gateway "
            "asks every request for a project key, and the anon key is the one that grants nothing by itself"
        )
    plain = {STORE_ENV: "supabase", BUCKET_ENV: settings.supabase_bucket}
    secret = {
        URL_ENV: url,
        ANON_ENV: settings.supabase_anon_key.get_secret_value(),
        TOKEN_ENV: upload_token(settings, job_id, valid_for_s=valid_for_s),
    }
    return plain, secret


def artifact_store(settings: Settings, uri: str | None = None) -> ArtifactStore:
    """The store holding ``uri`` (a file:// or supabase:// URI), or the configured one."""
    scheme = (uri or "").split("://", 1)[0] if uri and "://" in uri else None
    if scheme == LocalStore.scheme or (scheme is None and settings.artifact_store == "local"):
        return LocalStore(settings.paths.artifacts_dir)
    url, key = _supabase_credentials(settings)
    bucket = uri.split("://", 1)[1].split("/", 1)[0] if uri and scheme == "supabase" else settings.supabase_bucket
    return supabase_store(url, key, bucket=bucket, state_dir=settings.paths.cache_dir / "uploads")

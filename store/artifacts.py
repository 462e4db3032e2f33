"""Model artifacts in the ledger — what each job produced, where it is, its size and checksum — and the
artifact store that keeps them (``engine.artifacts``), as the settings configure it."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from engine.artifacts import (
    BUCKET_ENV,
    DIR_ENV,
    KEY_ENV,
    STORE_ENV,
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


def artifact_store(settings: Settings, uri: str | None = None) -> ArtifactStore:
    """The store holding ``uri`` (a file:// or supabase:// URI), or the configured one."""
    scheme = (uri or "").split("://", 1)[0] if uri and "://" in uri else None
    if scheme == LocalStore.scheme or (scheme is None and settings.artifact_store == "local"):
        return LocalStore(settings.paths.artifacts_dir)
    url, key = _supabase_credentials(settings)
    bucket = uri.split("://", 1)[1].split("/", 1)[0] if uri and scheme == "supabase" else settings.supabase_bucket
    return supabase_store(url, key, bucket=bucket, state_dir=settings.paths.cache_dir / "uploads")

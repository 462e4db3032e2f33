"""Model artifacts in the ledger: what each job produced, where it is, its size and checksum."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import col, select

from store.db import Ledger
from store.models import ModelArtifact

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
    return row


def list_artifacts(ledger: Ledger, job_id: uuid.UUID, artifact_type: str | None = None) -> list[ModelArtifact]:
    statement = select(ModelArtifact).where(col(ModelArtifact.job_id) == job_id)
    if artifact_type is not None:
        statement = statement.where(col(ModelArtifact.artifact_type) == artifact_type)
    with ledger.read() as session:
        return list(session.exec(statement.order_by(col(ModelArtifact.created_at))).all())

"""Registered training files: one row per distinct content (sha256), with its validation summary."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from store.db import Ledger
from store.errors import StoreError
from store.models import TrainingFile, utcnow


def register_file(
    ledger: Ledger,
    *,
    name: str,
    storage_path: str,
    sha256: str,
    format: str,
    size_bytes: int,
    conversation_count: int = 0,
    total_training_pairs: int = 0,
    trainable_pairs: int = 0,
    token_count: int | None = None,
    validation: dict[str, Any] | None = None,
    created_by: str | None = None,
) -> TrainingFile:
    """Record a dataset file; the same content registered again updates its row instead of adding one."""
    with ledger.write() as session:
        row = session.exec(select(TrainingFile).where(col(TrainingFile.sha256) == sha256)).first()
        if row is None:
            row = TrainingFile(
                name=name, storage_path=storage_path, sha256=sha256, format=format, created_by=created_by
            )
        row.name, row.storage_path, row.format, row.size_bytes = name, storage_path, format, size_bytes
        row.conversation_count, row.total_training_pairs = conversation_count, total_training_pairs
        row.trainable_pairs, row.token_count = trainable_pairs, token_count
        row.validation = validation or {}
        row.updated_at = utcnow()
        session.add(row)
    return row


def register_validated(
    ledger: Ledger, path: Path, *, sha256: str, size_bytes: int, report: dict[str, Any]
) -> TrainingFile:
    """Record a dataset file with what its validation report (``ValidationReport.to_dict()``) found."""
    return register_file(
        ledger,
        name=path.name,
        storage_path=str(path.resolve()),
        sha256=sha256,
        format=str(report.get("format")),
        size_bytes=size_bytes,
        conversation_count=int(report.get("conversations") or 0),
        total_training_pairs=int(report.get("pairs") or 0),
        trainable_pairs=int(report.get("trainable_pairs") or 0),
        token_count=report.get("tokens"),
        validation={k: report.get(k) for k in ("ok", "format", "examples", "tokens", "warnings")},
    )


def get_file(ledger: Ledger, file_id: uuid.UUID) -> TrainingFile:
    with ledger.read() as session:
        row = session.get(TrainingFile, file_id)
    if row is None:
        raise StoreError(f"no training file {file_id} in the ledger")
    return row


def list_files(ledger: Ledger) -> list[TrainingFile]:
    """Every registered file, most recently registered or updated first."""
    with ledger.read() as session:
        return list(session.exec(select(TrainingFile).order_by(col(TrainingFile.updated_at).desc())).all())

"""Registered training files: one row per path and content (sha256), with its validation summary.

A byte-identical copy at another path is a file of its own, so registering it never renames the file earlier
jobs trained on. A file whose bytes changed since it was registered is flagged (``content_state``).
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from engine.checksums import sha256_file
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
    """Record a dataset file; the same content at the same path registered again updates its row."""
    with ledger.write() as session:
        same = col(TrainingFile.sha256) == sha256, col(TrainingFile.storage_path) == storage_path
        row = session.exec(select(TrainingFile).where(*same)).first()
        if row is None:
            row = TrainingFile(
                name=name, storage_path=storage_path, sha256=sha256, format=format, created_by=created_by
            )
        row.name, row.format, row.size_bytes = name, format, size_bytes
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


class FileState(StrEnum):
    """How a registered file's bytes stand against what was registered."""

    UNCHANGED = "unchanged"
    CHANGED = "changed"  # the file at its path has other contents now: jobs trained on the old ones
    MISSING = "missing"  # nothing readable at its path any more
    ELSEWHERE = "not local"  # a storage URI: not checked from here


def content_state(row: TrainingFile) -> FileState:
    """Whether the file at ``row.storage_path`` still holds the bytes registered (hashed only when sizes agree)."""
    if "://" in row.storage_path:
        return FileState.ELSEWHERE
    path = Path(row.storage_path)
    try:
        if path.stat().st_size != row.size_bytes:
            return FileState.CHANGED
        return FileState.UNCHANGED if sha256_file(path) == row.sha256 else FileState.CHANGED
    except OSError:
        return FileState.MISSING


def checked_files(ledger: Ledger) -> list[tuple[TrainingFile, FileState]]:
    """Every registered file with the state of its contents; reads every local file, so never on a UI thread."""
    return [(row, content_state(row)) for row in list_files(ledger)]

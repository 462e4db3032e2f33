"""Ingest engine events into the ledger: the events, and what they mean for the job, in one transaction.

Events already ingested (seq at or below the job's cursor) are skipped, so ingesting the same events twice
changes nothing. Stage events move the job's status through the status machine (``store.status``); metrics
fill the metrics history and the job's progress; errors, artifacts and evaluation land on the job and its
artifacts.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from engine.events import Stage
from store.db import Ledger
from store.errors import IllegalTransition, JobNotFound
from store.events import EventRecord, insert_events
from store.metrics import upsert_metrics
from store.models import JobEvent, ModelArtifact, TrainingJob, utcnow
from store.status import TERMINAL, JobStatus, check_transition

log = logging.getLogger(__name__)

# The engine's stages as ledger statuses; packaging is part of evaluating (the ledger's stage column says it).
STAGE_STATUS: dict[str, JobStatus] = {
    Stage.PREPROCESSING: JobStatus.PREPROCESSING,
    Stage.MODEL_LOADING: JobStatus.MODEL_LOADING,
    Stage.TRAINING: JobStatus.TRAINING,
    Stage.EVALUATING: JobStatus.EVALUATING,
    Stage.PACKAGING: JobStatus.EVALUATING,
    Stage.UPLOADING: JobStatus.UPLOADING,
    Stage.COMPLETED: JobStatus.COMPLETED,
    Stage.FAILED: JobStatus.FAILED,
    Stage.CANCELLED: JobStatus.CANCELLED,
}


@dataclass
class Ingested:
    """What one ingest call did."""

    new_events: int = 0
    last_seq: int = 0
    status: str = ""
    terminal: bool = False
    stages: list[str] = field(default_factory=list)
    skipped_transitions: list[str] = field(default_factory=list)


def ingest(ledger: Ledger, job_id: uuid.UUID, events: Iterable[Mapping[str, Any]]) -> Ingested:
    """Record events after the job's cursor and apply them to the job, all in one write transaction."""
    records = sorted((EventRecord.from_line(e) for e in events), key=lambda r: r.seq)
    with ledger.write() as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id} in the ledger")
        fresh = [r for r in records if r.seq > job.last_event_seq]
        result = Ingested(last_seq=job.last_event_seq, status=job.status)
        if fresh:
            connection = session.connection()
            result.new_events = insert_events(connection, job_id, fresh)
            metrics = [_metric_row(r) for r in fresh if r.type == "metrics"]
            if metrics:
                upsert_metrics(connection, job_id, metrics)
            session.refresh(job)
            for record in fresh:
                _apply(session, job, record, result)
            job.last_event_seq = max(job.last_event_seq, fresh[-1].seq)
            job.updated_at = utcnow()
            session.add(job)
        result.last_seq, result.status = job.last_event_seq, job.status
        result.terminal = job.status in TERMINAL
    return result


def _metric_row(record: EventRecord) -> dict[str, Any]:
    return {**record.payload, "recorded_at": record.ts}


def _apply(session: Session, job: TrainingJob, record: EventRecord, result: Ingested) -> None:
    handler = _HANDLERS.get(record.type)
    if handler is not None:
        handler(session, job, record, result)


def _on_stage(session: Session, job: TrainingJob, record: EventRecord, result: Ingested) -> None:
    stage = str(record.payload.get("stage"))
    status = STAGE_STATUS.get(stage)
    if status is None:
        return
    try:
        new = check_transition(job.status, status, job=f"job {job.id.hex[:8]}")
    except IllegalTransition as exc:  # a late or repeated stage: keep the record, leave the status
        result.skipped_transitions.append(str(exc))
        log.warning("%s (event %s)", exc, record.seq)
        return
    if new not in (JobStatus.QUEUED, JobStatus.INTERRUPTED) and job.started_at is None:
        job.started_at = record.ts
    if new in TERMINAL and job.completed_at is None:
        job.completed_at = record.ts
    if new is JobStatus.CANCELLED and not job.error_message:
        job.error_message = record.payload.get("message")
    job.status, job.stage = new, stage
    result.stages.append(stage)


def _on_dataset(session: Session, job: TrainingJob, record: EventRecord, result: Ingested) -> None:
    job.total_steps = int(record.payload.get("total_steps") or 0) or job.total_steps


def _on_metrics(session: Session, job: TrainingJob, record: EventRecord, result: Ingested) -> None:
    payload = record.payload
    job.current_step = max(job.current_step, int(payload.get("step") or 0))
    job.total_steps = payload.get("total_steps") or job.total_steps
    job.current_epoch = float(payload.get("epoch") or job.current_epoch)
    eta = payload.get("eta")
    if eta is not None:
        job.estimated_completion_at = record.ts + timedelta(seconds=float(eta))


def _on_error(session: Session, job: TrainingJob, record: EventRecord, result: Ingested) -> None:
    job.error_category = record.payload.get("category")
    job.error_message = record.payload.get("message")
    job.error_hint = record.payload.get("hint")


def _on_eval(session: Session, job: TrainingJob, record: EventRecord, result: Ingested) -> None:
    for artifact in session.exec(select(ModelArtifact).where(col(ModelArtifact.job_id) == job.id)).all():
        artifact.validation_loss = record.payload.get("eval_loss")
        artifact.perplexity = record.payload.get("adapter_perplexity")
        session.add(artifact)


def _on_artifact(session: Session, job: TrainingJob, record: EventRecord, result: Ingested) -> None:
    _record_artifact(session, job, record.payload)


def _record_artifact(session: Session, job: TrainingJob, payload: Mapping[str, Any]) -> None:
    # A package is recorded where it was built (``path``), then where the artifact store keeps it (``uri``):
    # the same row moves to the URI, and the event keeps the workdir path.
    kind, path = str(payload.get("kind")), str(payload.get("path"))
    stored = str(payload.get("uri") or path)
    artifact = session.exec(
        select(ModelArtifact).where(
            col(ModelArtifact.job_id) == job.id,
            col(ModelArtifact.artifact_type) == kind,
            col(ModelArtifact.storage_path).in_([path, stored]),
        )
    ).first() or ModelArtifact(job_id=job.id, artifact_type=kind, storage_path=stored)
    artifact.storage_path = stored
    artifact.size_bytes = int(payload.get("size_bytes") or 0)
    artifact.sha256 = payload.get("sha256")
    artifact.base_model = job.base_model
    hp = job.hyperparameters or {}
    artifact.lora_config = {k: hp.get(k) for k in ("lora_r", "lora_alpha", "lora_dropout", "target_modules")}
    latest_eval = session.exec(
        select(JobEvent)
        .where(col(JobEvent.job_id) == job.id, col(JobEvent.type) == "eval")
        .order_by(col(JobEvent.seq).desc())
    ).first()
    if latest_eval is not None:
        artifact.validation_loss = latest_eval.payload.get("eval_loss")
        artifact.perplexity = latest_eval.payload.get("adapter_perplexity")
    session.add(artifact)
    if kind == "adapter":
        job.lora_artifact_path = stored


_HANDLERS = {
    "stage": _on_stage,
    "dataset": _on_dataset,
    "metrics": _on_metrics,
    "error": _on_error,
    "eval": _on_eval,
    "artifact": _on_artifact,
}

"""Ingest engine events into the ledger: the events, and what they mean for the job, in one transaction.

Events already ingested (seq at or below the job's cursor) are skipped, so ingesting the same events twice
changes nothing. Each event is parsed here into the engine's typed events (``engine.events``), so what the
ledger keeps has the engine's schema: an event that does not match it is not applied to the job and is kept,
under its seq, as a ``warning`` (code ``malformed_event``) that says what was wrong, so no screen meets it.

Stage events move the job's status through the status machine (``store.status``); metrics fill the metrics
history and the job's progress; errors, artifacts and evaluation land on the job and its artifacts.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlmodel import Session, col, select

from engine.events import (
    EVENT_TYPES,
    AnyEvent,
    ArtifactEvent,
    DatasetEvent,
    ErrorEvent,
    EvalEvent,
    MetricsEvent,
    Stage,
    StageEvent,
    parse_event,
)
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


@dataclass
class _Parsed:
    record: EventRecord
    event: AnyEvent | None  # None: an event type this version does not know, or a malformed one


def _parse(line: Mapping[str, Any]) -> _Parsed:
    """One event line as the ledger keeps it and as the engine's typed event; a malformed one as a warning."""
    record = EventRecord.from_line(line)
    if record.type not in EVENT_TYPES:  # a newer engine's event: kept, not applied
        return _Parsed(record, None)
    try:
        event = parse_event(dict(line))
    except ValueError as exc:
        message = f"event {record.seq} ({record.type}) does not match the engine's schema and was not applied: {exc}"
        log.warning("%s", message)
        payload = {"code": "malformed_event", "message": message, "details": {"event": record.payload}}
        return _Parsed(EventRecord(record.seq, "warning", record.ts, payload), None)
    event.ts = record.ts  # the time as the ledger keeps it, whatever form the line gave
    return _Parsed(record, event)


def ingest(ledger: Ledger, job_id: uuid.UUID, events: Iterable[Mapping[str, Any]]) -> Ingested:
    """Record events after the job's cursor and apply them to the job, all in one write transaction."""
    parsed = sorted((_parse(e) for e in events), key=lambda p: p.record.seq)
    with ledger.write() as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id} in the ledger")
        fresh = [p for p in parsed if p.record.seq > job.last_event_seq]
        result = Ingested(last_seq=job.last_event_seq, status=job.status)
        if fresh:
            connection = session.connection()
            result.new_events = insert_events(connection, job_id, [p.record for p in fresh])
            metrics = [_metric_row(p.record) for p in fresh if isinstance(p.event, MetricsEvent)]
            if metrics:
                upsert_metrics(connection, job_id, metrics)
            session.refresh(job)
            for item in fresh:
                if item.event is not None:
                    _apply(session, job, item.event, result)
            job.last_event_seq = max(job.last_event_seq, fresh[-1].record.seq)
            job.updated_at = utcnow()
            session.add(job)
        result.last_seq, result.status = job.last_event_seq, job.status
        result.terminal = job.status in TERMINAL
    return result


def _metric_row(record: EventRecord) -> dict[str, Any]:
    return {**record.payload, "recorded_at": record.ts}


def _apply(session: Session, job: TrainingJob, event: AnyEvent, result: Ingested) -> None:
    if isinstance(event, StageEvent):
        _on_stage(job, event, result)
    elif isinstance(event, DatasetEvent):
        job.total_steps = event.total_steps or job.total_steps
    elif isinstance(event, MetricsEvent):
        _on_metrics(job, event)
    elif isinstance(event, ErrorEvent):
        job.error_category, job.error_message, job.error_hint = event.category, event.message, event.hint
    elif isinstance(event, EvalEvent):
        for artifact in session.exec(select(ModelArtifact).where(col(ModelArtifact.job_id) == job.id)).all():
            artifact.validation_loss, artifact.perplexity = event.eval_loss, event.adapter_perplexity
            session.add(artifact)
    elif isinstance(event, ArtifactEvent):
        _record_artifact(session, job, event)


def _on_stage(job: TrainingJob, event: StageEvent, result: Ingested) -> None:
    stage = event.stage.value
    status = STAGE_STATUS[event.stage]
    try:
        new = check_transition(job.status, status, job=f"job {job.id.hex[:8]}")
    except IllegalTransition as exc:  # a late or repeated stage: keep the record, leave the status
        result.skipped_transitions.append(str(exc))
        log.warning("%s (event %s)", exc, event.seq)
        return
    if new not in (JobStatus.QUEUED, JobStatus.INTERRUPTED) and job.started_at is None:
        job.started_at = event.ts
    if new in TERMINAL and job.completed_at is None:
        job.completed_at = event.ts
    if new is JobStatus.CANCELLED and not job.error_message:
        job.error_message = event.message
    job.status, job.stage = new, stage
    result.stages.append(stage)


def _on_metrics(job: TrainingJob, event: MetricsEvent) -> None:
    job.current_step = max(job.current_step, event.step)
    job.total_steps = event.total_steps or job.total_steps
    job.current_epoch = event.epoch or job.current_epoch
    if event.eta is not None:
        job.estimated_completion_at = event.ts + timedelta(seconds=event.eta)


def _record_artifact(session: Session, job: TrainingJob, event: ArtifactEvent) -> None:
    # A package is recorded where it was built (``path``), then where the artifact store keeps it (``uri``):
    # the same row moves to the URI, and the event keeps the workdir path.
    kind, path = event.kind, event.path
    stored = event.uri or path
    artifact = session.exec(
        select(ModelArtifact).where(
            col(ModelArtifact.job_id) == job.id,
            col(ModelArtifact.artifact_type) == kind,
            col(ModelArtifact.storage_path).in_([path, stored]),
        )
    ).first() or ModelArtifact(job_id=job.id, artifact_type=kind, storage_path=stored)
    artifact.storage_path = stored
    artifact.size_bytes = event.size_bytes
    artifact.sha256 = event.sha256
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

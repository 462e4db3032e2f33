"""The ledger's tables (SQLModel), named and shaped as the seed's Supabase schema so sync is a straight copy.

Columns up to ``updated_at`` in ``training_jobs`` are the seed's; the block after them is lorapod's own
(added by migration 0002). Times are timezone-aware UTC; ids are UUIDs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is always UTC-aware in Python (SQLite stores naive text; Postgres timestamptz)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Named constraints and indexes, so migrations and the Postgres mirror refer to them by the same names.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _json(**kwargs: Any) -> Any:
    return Field(default_factory=dict, sa_type=JSONType, **kwargs)


def _time(nullable: bool = True, **kwargs: Any) -> Any:
    if nullable:
        return Field(default=None, sa_type=UTCDateTime, **kwargs)
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False, **kwargs)


class TrainingFile(SQLModel, table=True):
    """A registered dataset file, identified by its path and its content (migration 0007)."""

    __tablename__ = "training_files"
    __table_args__ = (sa.UniqueConstraint("storage_path", "sha256"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str
    storage_path: str = Field(description="Local path or storage URI")
    sha256: str = Field(max_length=64, index=True)
    format: str
    size_bytes: int = 0
    conversation_count: int = 0
    total_training_pairs: int = 0
    trainable_pairs: int = 0
    token_count: int | None = None
    validation: dict[str, Any] = _json(description="Validation summary: ok, errors, warnings")
    created_by: str | None = None
    created_at: datetime = _time(False)
    updated_at: datetime = _time(False)


class TrainingJob(SQLModel, table=True):
    """One training job, from queued to a terminal status."""

    __tablename__ = "training_jobs"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str | None = Field(default=None, index=True)
    training_file_id: uuid.UUID | None = Field(default=None, foreign_key="training_files.id", index=True)
    status: str = Field("queued", index=True)
    stage: str | None = None
    base_model: str = Field(index=True)
    preset: str | None = None
    hyperparameters: dict[str, Any] = _json()
    resources: dict[str, Any] = _json()
    pod_id: str | None = Field(default=None, description="RunPod pod id, or the local process id")
    current_step: int = 0
    total_steps: int | None = None
    current_epoch: float = 0.0
    started_at: datetime | None = _time(index=True)
    completed_at: datetime | None = _time()
    estimated_completion_at: datetime | None = _time()
    estimated_cost_usd: float | None = None
    actual_cost_usd: float = Field(default=0.0, index=True)
    gpu_hours: float = 0.0
    lora_artifact_path: str | None = None
    error_message: str | None = None
    error_category: str | None = None
    retry_count: int = 0
    parent_job_id: uuid.UUID | None = Field(default=None, foreign_key="training_jobs.id", index=True)
    created_by: str | None = None
    created_at: datetime = _time(False, index=True)
    updated_at: datetime = _time(False)

    # lorapod's own columns (migration 0002)
    spec: dict[str, Any] = _json(description="The JobSpec's parts not in their own columns (dataset, …)")
    provider: str = "local"
    gpu_type: str | None = Field(default=None, description="The GPU the job actually ran on")
    workdir: str | None = None
    error_hint: str | None = None
    last_event_seq: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = _time()


class ModelArtifact(SQLModel, table=True):
    """A file a job produced: an adapter, a package or a checkpoint."""

    __tablename__ = "model_artifacts"
    __table_args__ = (sa.UniqueConstraint("job_id", "artifact_type", "storage_path"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    job_id: uuid.UUID = Field(foreign_key="training_jobs.id", index=True)
    artifact_type: str = Field(description="adapter, full, deploy or checkpoint")
    storage_path: str
    size_bytes: int = 0
    sha256: str | None = Field(default=None, max_length=64)
    base_model: str | None = None
    lora_config: dict[str, Any] = _json()
    validation_loss: float | None = None
    perplexity: float | None = None
    created_at: datetime = _time(False)


class TrainingMetric(SQLModel, table=True):
    """One step's training metrics; append-only by (job, step)."""

    __tablename__ = "training_metrics_history"
    __table_args__ = (sa.UniqueConstraint("job_id", "step"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: uuid.UUID = Field(foreign_key="training_jobs.id")
    step: int
    epoch: float | None = None
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    gpu_memory_gb: float | None = None
    recorded_at: datetime = _time(False)


class JobEvent(SQLModel, table=True):
    """One engine event as it arrived; unique per (job, seq), so re-ingesting is a no-op."""

    __tablename__ = "job_events"
    __table_args__ = (sa.UniqueConstraint("job_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: uuid.UUID = Field(foreign_key="training_jobs.id")
    seq: int
    type: str = Field(index=True)
    payload: dict[str, Any] = _json()
    ts: datetime = _time(False)


class JobAttempt(SQLModel, table=True):
    """One launch of a job (a resume is a new attempt on the same workdir or volume), and what it cost."""

    __tablename__ = "job_attempts"
    __table_args__ = (sa.UniqueConstraint("job_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: uuid.UUID = Field(foreign_key="training_jobs.id", index=True)
    number: int
    provider: str
    handle: dict[str, Any] = _json(description="How to reach the run: pid and workdir, or pod id and endpoints")
    rate_usd_per_hour: float = 0.0
    gpu_count: int = 0
    started_at: datetime = _time(False)
    ended_at: datetime | None = _time()
    cost_usd: float = 0.0
    outcome: str | None = Field(default=None, description="completed, failed, cancelled, interrupted")


class Alert(SQLModel, table=True):
    """Something the user should see once: a budget threshold crossed, a job stopped by a limit or lost."""

    __tablename__ = "alerts"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, description="Raised once per key, e.g. budget:2026-11:0.8")
    kind: str
    level: str = "warning"
    message: str
    job_id: uuid.UUID | None = Field(default=None, foreign_key="training_jobs.id")
    created_at: datetime = _time(False, index=True)
    acknowledged_at: datetime | None = _time()


class HostKey(SQLModel, table=True):
    """An SSH host key pinned on first use: a later, different key for the same host and port is refused."""

    __tablename__ = "host_keys"
    __table_args__ = (sa.UniqueConstraint("host", "port"),)

    id: int | None = Field(default=None, primary_key=True)
    host: str
    port: int
    key_type: str
    key_base64: str
    fingerprint_sha256: str
    pinned_at: datetime = _time(False)


class SyncState(SQLModel, table=True):
    """How far this ledger has synced each table with the shared Postgres (push and pull cursors)."""

    __tablename__ = "sync_state"

    table_name: str = Field(primary_key=True)
    pushed_until: datetime | None = _time()
    pulled_until: datetime | None = _time()
    cursor: dict[str, Any] = _json(description="Per-table details a resumed sync needs")
    updated_at: datetime = _time(False)


class NoticeDelivery(SQLModel, table=True):
    """One notice on one channel: recorded before it is sent, so each is sent once whichever process sends it.

    Local to this ledger (never synced): each installation sends its own notices to its own channels.
    """

    __tablename__ = "notice_deliveries"
    __table_args__ = (sa.UniqueConstraint("key", "channel"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(description="The notice's dedupe key, e.g. completed:<job id> or budget:2026-11:0.8")
    channel: str = Field(description="webhook, email or desktop")
    job_id: uuid.UUID | None = Field(default=None, foreign_key="training_jobs.id", index=True)
    kind: str
    title: str
    body: str
    blocks: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONType, description="Slack blocks, if any")
    status: str = Field("pending", index=True, description="pending, sent or failed")
    attempts: int = 0
    last_error: str | None = Field(default=None, description="Why the last try failed, secrets redacted")
    created_at: datetime = _time(False)
    sent_at: datetime | None = _time()
    next_attempt_at: datetime | None = _time(description="When a try is due; None once sent or given up")


class Rating(SQLModel, table=True):
    """One person's blind verdict on one held-out prompt of a job: the adapter's reply, the base's, or a tie.

    A rater rates a prompt once (a second rating replaces the first); several raters may rate the same job.
    """

    __tablename__ = "ratings"
    __table_args__ = (sa.UniqueConstraint("job_id", "prompt_index", "rater"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    job_id: uuid.UUID = Field(foreign_key="training_jobs.id", index=True)
    prompt_index: int = Field(description="The prompt's place in the job's eval event ``replies``")
    rater: str
    choice: str = Field(description="adapter, base or tie")
    adapter_label: str = Field(description="A or B: where the adapter's reply was shown")
    updated_at: datetime = _time(False, description="When rated (again): the newest rating of a prompt wins in sync")

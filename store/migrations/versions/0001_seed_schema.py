"""The seed's Supabase schema: training files, jobs, artifacts, metrics history and job events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import JSONType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created_updated() -> list[sa.Column]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "training_files",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("storage_path", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("conversation_count", sa.Integer(), nullable=False),
        sa.Column("total_training_pairs", sa.Integer(), nullable=False),
        sa.Column("trainable_pairs", sa.Integer(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=True),
        sa.Column("validation", JSONType, nullable=False),
        sa.Column("created_by", sa.String(), nullable=True),
        *_created_updated(),
        sa.PrimaryKeyConstraint("id", name="pk_training_files"),
        sa.UniqueConstraint("sha256", name="uq_training_files_sha256"),
    )
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("training_file_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=True),
        sa.Column("base_model", sa.String(), nullable=False),
        sa.Column("preset", sa.String(), nullable=True),
        sa.Column("hyperparameters", JSONType, nullable=False),
        sa.Column("resources", JSONType, nullable=False),
        sa.Column("pod_id", sa.String(), nullable=True),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("current_epoch", sa.Float(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("estimated_completion_at", UTCDateTime(), nullable=True),
        sa.Column("estimated_cost_usd", sa.Float(), nullable=True),
        sa.Column("actual_cost_usd", sa.Float(), nullable=False),
        sa.Column("gpu_hours", sa.Float(), nullable=False),
        sa.Column("lora_artifact_path", sa.String(), nullable=True),
        sa.Column("error_message", sa.String(), nullable=True),
        sa.Column("error_category", sa.String(), nullable=True),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("parent_job_id", sa.Uuid(), nullable=True),
        sa.Column("created_by", sa.String(), nullable=True),
        *_created_updated(),
        sa.ForeignKeyConstraint(
            ["training_file_id"], ["training_files.id"], name="fk_training_jobs_training_file_id_training_files"
        ),
        sa.ForeignKeyConstraint(
            ["parent_job_id"], ["training_jobs.id"], name="fk_training_jobs_parent_job_id_training_jobs"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_training_jobs"),
    )
    for column in ("status", "base_model", "training_file_id", "parent_job_id", "created_at"):
        op.create_index(f"ix_training_jobs_{column}", "training_jobs", [column])

    op.create_table(
        "model_artifacts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("artifact_type", sa.String(), nullable=False),
        sa.Column("storage_path", sa.String(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("base_model", sa.String(), nullable=True),
        sa.Column("lora_config", JSONType, nullable=False),
        sa.Column("validation_loss", sa.Float(), nullable=True),
        sa.Column("perplexity", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["training_jobs.id"], name="fk_model_artifacts_job_id_training_jobs"),
        sa.PrimaryKeyConstraint("id", name="pk_model_artifacts"),
        sa.UniqueConstraint(
            "job_id", "artifact_type", "storage_path", name="uq_model_artifacts_job_id_artifact_type_storage_path"
        ),
    )
    op.create_index("ix_model_artifacts_job_id", "model_artifacts", ["job_id"])

    op.create_table(
        "training_metrics_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("eval_loss", sa.Float(), nullable=True),
        sa.Column("learning_rate", sa.Float(), nullable=True),
        sa.Column("grad_norm", sa.Float(), nullable=True),
        sa.Column("tokens_per_second", sa.Float(), nullable=True),
        sa.Column("gpu_memory_gb", sa.Float(), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["training_jobs.id"], name="fk_training_metrics_history_job_id_training_jobs"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_training_metrics_history"),
        sa.UniqueConstraint("job_id", "step", name="uq_training_metrics_history_job_id_step"),
    )
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["training_jobs.id"], name="fk_job_events_job_id_training_jobs"),
        sa.PrimaryKeyConstraint("id", name="pk_job_events"),
        sa.UniqueConstraint("job_id", "seq", name="uq_job_events_job_id_seq"),
    )
    op.create_index("ix_job_events_type", "job_events", ["type"])


def downgrade() -> None:
    for table in ("job_events", "training_metrics_history", "model_artifacts", "training_jobs", "training_files"):
        op.drop_table(table)

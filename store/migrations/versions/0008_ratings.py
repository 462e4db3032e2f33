"""Ratings: blind human verdicts on a job's held-out replies, one per rater and prompt.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ratings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("prompt_index", sa.Integer(), nullable=False),
        sa.Column("rater", sa.String(), nullable=False),
        sa.Column("choice", sa.String(), nullable=False),
        sa.Column("adapter_label", sa.String(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["training_jobs.id"], name="fk_ratings_job_id_training_jobs"),
        sa.PrimaryKeyConstraint("id", name="pk_ratings"),
        sa.UniqueConstraint("job_id", "prompt_index", "rater", name="uq_ratings_job_id_prompt_index_rater"),
    )
    op.create_index("ix_ratings_job_id", "ratings", ["job_id"])


def downgrade() -> None:
    op.drop_table("ratings")

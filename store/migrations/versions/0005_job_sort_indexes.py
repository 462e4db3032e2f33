"""Indexes for the jobs table's sorts: start time, cost and name stay fast at tens of thousands of jobs.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("started_at", "actual_cost_usd", "name")


def upgrade() -> None:
    for column in COLUMNS:
        op.create_index(f"ix_training_jobs_{column}", "training_jobs", [column])


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(f"ix_training_jobs_{column}", "training_jobs")

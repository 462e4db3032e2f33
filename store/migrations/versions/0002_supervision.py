"""lorapod's own job columns: the full spec, provider, actual GPU, workdir, hint, ingest cursor and lease.

Existing rows keep everything: the provider is read from their resources JSON and the ingest cursor from
the events already recorded.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import JSONType, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("spec", JSONType, nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("provider", sa.String(), nullable=False, server_default="local"))
        batch.add_column(sa.Column("gpu_type", sa.String(), nullable=True))
        batch.add_column(sa.Column("workdir", sa.String(), nullable=True))
        batch.add_column(sa.Column("error_hint", sa.String(), nullable=True))
        batch.add_column(sa.Column("last_event_seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_owner", sa.String(), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", UTCDateTime(), nullable=True))

    jobs = sa.table(
        "training_jobs",
        sa.column("id", sa.Uuid()),
        sa.column("resources", JSONType),
        sa.column("provider", sa.String()),
        sa.column("last_event_seq", sa.Integer()),
    )
    events = sa.table("job_events", sa.column("job_id", sa.Uuid()), sa.column("seq", sa.Integer()))
    provider = sa.func.coalesce(jobs.c.resources["provider"].as_string(), "local")
    last_seq = (
        sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0)).where(events.c.job_id == jobs.c.id).scalar_subquery()
    )
    op.execute(jobs.update().values(provider=provider, last_event_seq=last_seq))


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        for column in (
            "lease_expires_at", "lease_owner", "last_event_seq", "error_hint", "workdir", "gpu_type",
            "provider", "spec",
        ):  # fmt: skip
            batch.drop_column(column)

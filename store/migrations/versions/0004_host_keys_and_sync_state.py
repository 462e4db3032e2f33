"""Pinned SSH host keys (RunPod pods) and the sync cursors of the Supabase mirror.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from store.models import JSONType, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("key_type", sa.String(), nullable=False),
        sa.Column("key_base64", sa.String(), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(), nullable=False),
        sa.Column("pinned_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_host_keys"),
        sa.UniqueConstraint("host", "port", name="uq_host_keys_host_port"),
    )
    op.create_table(
        "sync_state",
        sa.Column("table_name", sa.String(), nullable=False),
        sa.Column("pushed_until", UTCDateTime(), nullable=True),
        sa.Column("pulled_until", UTCDateTime(), nullable=True),
        sa.Column("cursor", JSONType, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("table_name", name="pk_sync_state"),
    )


def downgrade() -> None:
    op.drop_table("sync_state")
    op.drop_table("host_keys")

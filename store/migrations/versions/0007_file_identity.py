"""A training file is identified by its path and its content: a byte-identical copy elsewhere is a file of its own.

Until 0006 a file's sha256 was unique, so registering a copy at another path renamed the one row every earlier
job pointed at. Rolling back merges each content's rows into its oldest, repointing the jobs.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_files") as batch:
        batch.drop_constraint("uq_training_files_sha256", type_="unique")
        batch.create_unique_constraint("uq_training_files_storage_path_sha256", ["storage_path", "sha256"])
        batch.create_index("ix_training_files_sha256", ["sha256"])


def downgrade() -> None:
    files = sa.table(
        "training_files", sa.column("id", sa.Uuid()), sa.column("sha256", sa.String()), sa.column("created_at")
    )
    jobs = sa.table("training_jobs", sa.column("training_file_id", sa.Uuid()))
    bind = op.get_bind()
    keep: dict[str, object] = {}
    for file_id, sha256 in bind.execute(sa.select(files.c.id, files.c.sha256).order_by(files.c.created_at)):
        if sha256 not in keep:
            keep[sha256] = file_id
            continue
        bind.execute(jobs.update().where(jobs.c.training_file_id == file_id).values(training_file_id=keep[sha256]))
        bind.execute(files.delete().where(files.c.id == file_id))
    with op.batch_alter_table("training_files") as batch:
        batch.drop_index("ix_training_files_sha256")
        batch.drop_constraint("uq_training_files_storage_path_sha256", type_="unique")
        batch.create_unique_constraint("uq_training_files_sha256", ["sha256"])

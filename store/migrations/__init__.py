"""Schema migrations of the ledger (Alembic), applied in place when a ledger is opened.

``HEAD_REVISION`` lets an up-to-date ledger open without importing Alembic; a test keeps it equal to the
newest revision in ``versions/``. To add a migration: write ``versions/NNNN_<what>.py`` (``alembic -c
store/migrations/alembic.ini revision -m "…"``), then raise ``HEAD_REVISION``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from store.errors import LedgerError

if TYPE_CHECKING:
    from alembic.config import Config

HEAD_REVISION = "0008"
SCRIPT_LOCATION = Path(__file__).parent


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic Config for this folder, bound to ``connection`` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: sa.Connection, revision: str = "head") -> None:
    """Upgrade the ledger behind ``connection`` to ``revision`` inside the caller's transaction."""
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


def downgrade(connection: sa.Connection, revision: str) -> None:
    """Downgrade the ledger behind ``connection`` to ``revision`` inside the caller's transaction."""
    from alembic import command

    command.downgrade(alembic_config(connection), revision)


def migrate(engine: sa.Engine, revision: str = "head", *, down: bool = False) -> None:
    """Move a SQLite ledger to ``revision`` in one transaction.

    SQLite alters a table by copying it, which foreign keys would forbid mid-way; they are switched off
    for the migration and the whole file is checked afterwards, so a migration cannot leave a dangling key.
    """
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        with conn.begin():
            (downgrade if down else upgrade)(conn, revision)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise LedgerError(f"the migration to {revision} would leave dangling keys: {broken[:5]}")
        raw.execute("PRAGMA foreign_keys=ON")


def head() -> str:
    """The newest revision among the migration scripts."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the ledger's migrations have {len(heads)} heads: {heads}")
    return heads[0]

"""Alembic environment: migrates the connection handed in by ``store.migrations.upgrade``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

import store.models  # noqa: F401  (registers the tables on SQLModel.metadata for autogenerate)

config = context.config
connection = config.attributes.get("connection")


def _run(conn: sa.Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # the alembic command line: -x url=sqlite:///path/to/ledger.sqlite
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("pass the ledger: alembic -c store/migrations/alembic.ini -x url=sqlite:///… upgrade head")
    with sa.create_engine(url).begin() as conn:
        _run(conn)

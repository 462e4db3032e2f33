"""The ledger's connection: SQLite in WAL mode with a busy timeout, migrated to head when opened.

Writers take the write lock up front (``BEGIN IMMEDIATE``), so two processes writing at once wait for each
other inside SQLite's busy timeout instead of failing with "database is locked" on a lock upgrade.
Readers use deferred transactions and never block writers (WAL).
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from store.errors import LedgerError
from store.migrations import HEAD_REVISION

BUSY_TIMEOUT_MS = 30_000
_WRITE = "lorapod_write"
_DAMAGE = {26: "is not an SQLite database", 11: "is damaged"}  # SQLITE_NOTADB, SQLITE_CORRUPT


class Ledger:
    """One SQLite ledger file. ``read()`` and ``write()`` hand out sessions bound to a transaction."""

    def __init__(self, path: Path | str, *, migrate: bool = True) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger's folder {self.path.parent}: {exc}") from None
        self.engine = sa.create_engine(f"sqlite:///{self.path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)
        self._writer = self.engine.execution_options(**{_WRITE: True})
        self.recovery: str | None = None  # what opening it had to repair, for the user (store.recovery)
        if migrate:
            self.migrate()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session in a deferred (read) transaction."""
        with self._session(self.engine) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session holding the write lock; commits on success, rolls back on error."""
        with self._session(self._writer) as session:
            yield session
            session.commit()

    @contextmanager
    def _session(self, bind: sa.Engine) -> Iterator[Session]:
        try:
            with Session(bind, expire_on_commit=False) as session:
                yield session
        except SQLAlchemyError as exc:
            raise LedgerError(f"ledger {self.path}: {_reason(exc)}") from exc

    def revision(self) -> str | None:
        """The schema revision the file carries (None for a new, empty file)."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def migrate(self) -> None:
        """Bring the schema to head in place, keeping every row; one process migrates at a time."""
        try:
            if self.revision() == HEAD_REVISION:
                return
            with self.exclusive():
                if self.revision() == HEAD_REVISION:
                    return
                from store.migrations import migrate

                migrate(self.engine)
        except SQLAlchemyError as exc:
            damage = _DAMAGE.get(getattr(getattr(exc, "orig", None), "sqlite_errorcode", 0))
            if damage:
                raise LedgerError(
                    f"the ledger {self.path} {damage} ({_reason(exc)}): restore it from a backup, or move it aside "
                    "and lorapod starts a new one, rebuilding the jobs from their folders"
                ) from None
            raise LedgerError(f"cannot migrate the ledger {self.path}: {_reason(exc)}") from exc

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The ledger's file lock, held by one process at a time: to migrate it, or to rebuild it."""
        with ledger_lock(self.path):
            yield

    def close(self) -> None:
        self.engine.dispose()


def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook issue BEGIN itself (pysqlite's own would always be deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _on_begin(conn: sa.Connection) -> None:
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def ledger_lock(ledger_path: Path) -> Iterator[None]:
    """The lock of the ledger at ``ledger_path`` (a file beside it), also before the ledger can be opened."""
    with ledger_path.with_name(ledger_path.name + ".lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _reason(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    return str(original or exc).splitlines()[0]

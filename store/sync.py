"""Sync the ledger with the Postgres of a Supabase project: push local changes, pull remote ones, resumably.

    sync(ledger, db_url) → SyncReport          (also ``lorapod sync [--push|--pull]`` and the dashboard)

lorapod's tables there live in the schema ``lorapod``, beside the web app's tables of the same names in
``public``; a database without them raises ``SyncSchemaMissing`` or ``SyncSchemaConflict`` (store.sync_schema).

**Push** sends what changed here since the last push, in batches: training files (when the web app's
``public.training_files`` has the ledger's shape) and jobs by ``(updated_at, id)``, each job with its attempts and
artifacts; metrics and events by their local row id (new rows only — they are append-only). **Pull** takes
what was written there since the last pull, by ``sync_xid``, the id of the transaction that last wrote the
row (a trigger keeps it): rows are read up to the oldest transaction still open, so one written late — by a
ledger that was offline for a week, say — is never skipped; the training files pulled jobs refer to come
with them. Conflicts are settled by ``store.sync_rules``, identically on both sides.

Cursors live in the ledger's ``sync_state`` table. A pulled batch and its cursor are written in one
transaction; a pushed batch is committed there before its cursor is written here, so a sync cut off between
the two sends that batch again, and the upserts make the repeat a no-op. Either way a sync killed at any
point resumes where it stopped, with no duplicates.

Offline-first: an unreachable database raises ``SyncUnavailable`` (a ``StoreError``) with a plain message;
nothing local waits on it, and the next sync catches up. The database URL carries a password: it is never
logged, and messages name only host, port and database.

The connection is SQLAlchemy over psycopg 3 with prepared statements off (``prepare_threshold=None``), so
the direct connection, Supavisor's session mode (:5432) and its transaction mode (:6543) all work.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from store.db import Ledger
from store.errors import SyncError, SyncUnavailable
from store.sync_pull import PullPhase
from store.sync_push import PushPhase

log = logging.getLogger(__name__)

BATCH_SIZE = 500
CONNECT_TIMEOUT_S = 10

Progress = Callable[[str, str, int], None]  # (table, "push" or "pull", rows so far)


@dataclass
class TableCounts:
    """Rows one table sent and received, and how many of them changed something on the other side."""

    sent: int = 0
    received: int = 0
    changed_remote: int = 0
    changed_local: int = 0


@dataclass
class SyncReport:
    remote: str = ""  # host:port/database — never a credential
    tables: dict[str, TableCounts] = field(default_factory=dict)
    seconds: float = 0.0
    pushed: bool = False
    pulled: bool = False

    def table(self, name: str) -> TableCounts:
        return self.tables.setdefault(name, TableCounts())

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.tables.values())

    @property
    def received(self) -> int:
        return sum(t.received for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "pushed": self.pushed,
            "pulled": self.pulled,
            "seconds": round(self.seconds, 3),
            "tables": {name: vars(counts) for name, counts in self.tables.items()},
        }


def sync(
    ledger: Ledger,
    db_url: str,
    *,
    push: bool = True,
    pull: bool = True,
    owner: str | None = None,
    batch_size: int = BATCH_SIZE,
    on_progress: Progress | None = None,
) -> SyncReport:
    """Push then pull (or one of them); safe to interrupt and run again at any point.

    ``owner``: the Supabase auth user id written as ``created_by`` on pushed jobs that have none, so the
    web app shows them to that user (row-level security); without one only the service role sees them.
    """
    url = database_url(db_url)
    owner = _owner(owner)
    report = SyncReport(remote=describe(url))
    started = time.monotonic()
    engine = sa.create_engine(
        url,
        poolclass=NullPool,
        connect_args={
            "prepare_threshold": None,  # Supavisor's transaction mode has no prepared statements
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "lorapod-sync",
        },
    )
    run: _Run | None = None
    try:
        try:
            connection = engine.connect()
        except DBAPIError as exc:
            raise SyncUnavailable(
                f"cannot reach the Supabase database at {report.remote}: {_reason(exc, url)}. Local work goes on; "
                "run `lorapod sync` again once it is reachable."
            ) from None
        with connection:
            run = _Run(ledger, connection, report, owner, batch_size, on_progress)
            run.prepare()
            if push:
                run.push()
                report.pushed = True
            if pull:
                run.pull()
                report.pulled = True
    except OperationalError as exc:
        where = f" ({run.phase})" if run and run.phase else ""
        raise SyncUnavailable(
            f"lost the Supabase database at {report.remote}{where}: {_reason(exc, url)}. What was synced is kept; "
            "the next sync continues from there."
        ) from None
    except DBAPIError as exc:
        where = f" while syncing {run.phase}" if run and run.phase else ""
        raise SyncError(f"the Supabase database refused a write{where}: {_reason(exc, url)}") from None
    finally:
        engine.dispose()
    report.seconds = time.monotonic() - started
    log.info("sync with %s: sent %d rows, received %d", report.remote, report.sent, report.received)
    return report


def database_url(db_url: str) -> sa.URL:
    """SUPABASE_DB_URL as a SQLAlchemy URL for psycopg 3 (postgres:// and postgresql:// both accepted)."""
    try:
        url = make_url(db_url.strip())
    except ArgumentError:
        raise SyncError(
            "SUPABASE_DB_URL is not a database URL (expected postgresql://USER:PASSWORD@HOST:PORT/postgres)"
        ) from None
    if url.get_backend_name() not in ("postgres", "postgresql"):
        raise SyncError(f"SUPABASE_DB_URL must be a PostgreSQL URL, not {url.get_backend_name()}://")
    return url.set(drivername="postgresql+psycopg")


def describe(url: sa.URL) -> str:
    """host:port/database — what messages may say about a database URL."""
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _reason(exc: DBAPIError, url: sa.URL) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    secret = url.password
    if isinstance(secret, str) and secret:
        reason = reason.replace(secret, "***")
    return reason


def _owner(owner: str | None) -> str | None:
    if not owner:
        return None
    try:
        return str(uuid.UUID(owner))
    except ValueError:
        raise SyncError(f"supabase_user_id must be a Supabase auth user id (a UUID), not {owner!r}") from None


class _Run(PushPhase, PullPhase):
    """One sync: push, then pull, over one connection."""


__all__ = ["SyncReport", "TableCounts", "database_url", "describe", "sync"]

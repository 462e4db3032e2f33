"""What one sync works with: the two databases, the cursors, the report, and rows as each side takes them."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from store import sync_rules as rules
from store.db import Ledger
from store.errors import SyncError
from store.models import SyncState, utcnow
from store.supabase import SCHEMA
from store.sync_schema import check_remote_schema

if TYPE_CHECKING:
    from store.sync import Progress, SyncReport

log = logging.getLogger("store.sync")


def uuid_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


class Cursors:
    """The sync_state rows: one per table, reset when the ledger meets another database."""

    def __init__(self, ledger: Ledger, identity: str) -> None:
        self.ledger = ledger
        self.identity = identity
        with ledger.read() as session:
            rows = {row.table_name: row for row in session.exec(select(SyncState)).all()}
        self.state: dict[str, dict[str, Any]] = {}
        for name, row in rows.items():
            if row.cursor.get("remote") == identity:
                self.state[name] = {**row.cursor, "pushed_until": row.pushed_until, "pulled_until": row.pulled_until}
        if rows and not self.state:
            log.info("the ledger last synced with another database: starting over (upserts skip what is there)")

    def get(self, table: str) -> dict[str, Any]:
        return self.state.setdefault(table, {})

    def save(self, connection: sa.Connection, table: str, **values: Any) -> None:
        """Record cursor values inside the caller's ledger transaction."""
        state = self.get(table)
        state.update(values)
        cursor = {k: v for k, v in state.items() if k not in ("pushed_until", "pulled_until")}
        cursor["remote"] = self.identity
        row = {
            "table_name": table,
            "pushed_until": state.get("pushed_until"),
            "pulled_until": state.get("pulled_until"),
            "cursor": cursor,
            "updated_at": utcnow(),
        }
        statement = rules.sqlite_insert(rules.SYNC_STATE).on_conflict_do_update(
            index_elements=["table_name"], set_={k: v for k, v in row.items() if k != "table_name"}
        )
        connection.execute(statement, row)

    def save_now(self, table: str, **values: Any) -> None:
        with self.ledger.write() as session:
            self.save(session.connection(), table, **values)


class SyncContext:
    """One sync: the remote connection, the cursors, and the report being filled in (push and pull extend it)."""

    def __init__(
        self,
        ledger: Ledger,
        connection: sa.Connection,
        report: SyncReport,
        owner: str | None,
        batch_size: int,
        on_progress: Progress | None,
    ) -> None:
        self.ledger = ledger
        # lorapod's tables are defined without a schema (the ledger's SQLite has none): there, they are in
        # lorapod's own, beside the web app's tables of the same names in public.
        self.remote = connection.execution_options(schema_translate_map={None: SCHEMA})
        self.report = report
        self.owner = owner
        self.batch = max(1, batch_size)
        self.on_progress = on_progress
        self.phase = ""
        self.jobs_table = rules.remote_jobs_table()
        self.files_table: sa.Table | None = None
        self.file_columns: list[str] = []
        self.cursors: Cursors

    # --- setup ------------------------------------------------------------------------------------------

    def prepare(self) -> None:
        with self.remote.begin():
            check_remote_schema(self.remote, self.report.remote)
            self.files_table, self.file_columns = self._web_app_files()
            if self.owner is not None and not self._user_exists(self.owner):
                raise SyncError(f"supabase_user_id {self.owner} is not a user of this Supabase project")
        self.cursors = Cursors(self.ledger, self._identity())

    def _web_app_files(self) -> tuple[sa.Table | None, list[str]]:
        """The web app's training_files when its rows can be the ledger's files; else files do not travel."""
        if not self.remote.execute(sa.text("SELECT to_regclass('public.training_files') IS NOT NULL")).scalar():
            return None, []
        table = sa.Table("training_files", sa.MetaData(), schema="public", autoload_with=self.remote, resolve_fks=False)
        columns = [c.name for c in rules.FILES.columns if c.name in table.c]
        needed = {"id", "name", "storage_path", "sha256", "format", "updated_at"}  # see local_file
        # A column it requires that the ledger cannot fill (the Bright Run app's json_file_path, say) would
        # refuse every row: such a table is the app's alone.
        unfillable = [
            c.name for c in table.columns
            if not c.nullable and c.server_default is None and c.name not in columns
        ]  # fmt: skip
        if not needed <= set(columns) or unfillable:
            log.info("the web app's training_files has a shape of its own: files are not synced")
            return None, []
        return table, columns

    def _user_exists(self, user_id: str) -> bool:
        try:
            with self.remote.begin_nested():
                statement = sa.text("SELECT count(*) FROM auth.users WHERE id = CAST(:id AS uuid)")
                return bool(self.remote.execute(statement, {"id": user_id}).scalar())
        except DBAPIError:  # auth.users not readable with these credentials: the database checks it on write
            return True

    def _identity(self) -> str:
        """Which database this is, so cursors are not carried from one project to another."""
        with self.remote.begin():
            database = self.remote.execute(sa.text("SELECT current_database()")).scalar()
            try:
                with self.remote.begin_nested():
                    system = self.remote.execute(
                        sa.text("SELECT system_identifier::text FROM pg_control_system()")
                    ).scalar()
            except DBAPIError:
                system = self.report.remote
        return hashlib.sha256(f"{system}/{database}".encode()).hexdigest()[:16]

    def progress(self, table: str, direction: str, rows: int) -> None:
        if self.on_progress is not None:
            self.on_progress(table, direction, rows)

    # --- rows -----------------------------------------------------------------------------------------

    def local_rows(self, statement: Any) -> list[dict[str, Any]]:
        with self.ledger.read() as session:
            return [dict(row) for row in session.connection().execute(statement).mappings()]

    def remote_ids(self, table: sa.Table, ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        wanted = list(set(ids))
        if not wanted:
            return set()
        found = self.remote.execute(sa.select(table.c.id).where(table.c.id.in_(wanted))).scalars()
        return {uuid.UUID(str(value)) for value in found}

    def remote_rows(self, table: sa.Table, ids: Iterable[uuid.UUID]) -> list[dict[str, Any]]:
        columns = self.file_columns if table is self.files_table else [c.name for c in table.columns]
        statement = sa.select(*(table.c[c] for c in columns)).where(table.c.id.in_(list(ids)))
        with self.remote.begin():
            return [dict(row) for row in self.remote.execute(statement).mappings()]


def changed(connection: sa.Connection, statement: Any, rows: list[dict[str, Any]]) -> int:
    """Run an upsert over rows; how many it inserted or changed (an upsert that changes nothing returns none)."""
    if not rows:
        return 0
    table = statement.table
    key = table.c.id if "id" in rows[0] else table.c.job_id
    return len(connection.execute(statement.returning(key), rows).all())


def key_value(key: sa.Column[Any], text: str) -> Any:
    return uuid.UUID(text) if isinstance(key.type, sa.Uuid) else int(text)


def strip(table: sa.Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with only what travels (the ledger's own integer ids and an attempt's pod token stay behind)."""
    kept = {c: row[c] for c in rules.synced_columns(table) if c in row}
    if table is rules.ATTEMPTS and "handle" in kept:
        kept["handle"] = rules.shareable_handle(kept["handle"])
    return kept


def plain(table: sa.Table, column: str, value: Any) -> Any:
    """A local value as the database's column takes it (a text owner id into a uuid column)."""
    if column == "created_by" and isinstance(table.c[column].type, sa.Uuid):
        return uuid_text(value)
    return value


def local_ids(local: sa.Connection, table: sa.Table, ids: Iterable[Any]) -> set[uuid.UUID]:
    wanted = [uuid.UUID(str(i)) for i in ids if i is not None]
    if not wanted:
        return set()
    return set(local.execute(sa.select(table.c.id).where(table.c.id.in_(wanted))).scalars())


def unknown_parents(jobs: Mapping[Any, Mapping[str, Any]], seen: set[Any]) -> set[Any]:
    """Parent ids the batch refers to but does not hold (and that were not looked for already)."""
    return {
        parent
        for job in jobs.values()
        if (parent := job["parent_job_id"]) is not None and parent not in jobs and parent not in seen
    }


def parents_first(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jobs ordered so that a parent is written before its children (foreign keys are checked per row)."""
    pending = {uuid.UUID(str(j["id"])): j for j in jobs}
    ordered: list[dict[str, Any]] = []
    while pending:
        ready = [i for i, j in pending.items() if j["parent_job_id"] is None or j["parent_job_id"] not in pending]
        for job_id in sorted(ready, key=lambda i: (pending[i]["created_at"], i)) or list(pending)[:1]:
            ordered.append(pending.pop(job_id))
    return ordered


def _required_default(column: sa.Column[Any]) -> Any:
    if isinstance(column.type, sa.JSON) or column.name in ("hyperparameters", "resources", "spec", "validation"):
        return {}
    if isinstance(column.type, (sa.Integer, sa.Float)):
        return 0
    if isinstance(column.type, sa.types.TypeDecorator):
        return utcnow()
    return {"status": "queued", "provider": "local"}.get(column.name, "")


def _fill(table: sa.Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """A remote row as the ledger stores it: text ids as text, NULLs in NOT NULL columns given defaults."""
    out: dict[str, Any] = {}
    for column in table.columns:
        if column.name not in row:
            continue
        value = row[column.name]
        if isinstance(value, uuid.UUID) and not isinstance(column.type, sa.Uuid):
            value = str(value)
        if value is None and not column.nullable and not column.primary_key:
            value = _required_default(column)
        out[column.name] = value
    return out


def local_job(row: Mapping[str, Any]) -> dict[str, Any]:
    job = _fill(rules.JOBS, {c: row.get(c) for c in rules.JOB_COLUMNS})
    job["id"] = uuid.UUID(str(row["id"]))
    for name in ("training_file_id", "parent_job_id"):
        job[name] = uuid.UUID(str(job[name])) if job[name] is not None else None
    return job


def local_file(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """A training file of the web app's table as the ledger keeps it; None when it lacks what the ledger needs."""
    if any(not row.get(name) for name in ("id", "name", "storage_path", "sha256", "format")):
        return None
    return _fill(rules.FILES, row)

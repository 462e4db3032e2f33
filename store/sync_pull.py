"""Sync, pull: what was written to Postgres since the last pull, merged into this ledger in resumable batches."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from store import sync_rules as rules
from store.models import utcnow
from store.sync_context import (
    SyncContext,
    changed,
    key_value,
    local_file,
    local_ids,
    local_job,
    parents_first,
    strip,
    unknown_parents,
)

FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


class PullPhase(SyncContext):
    """Pull: each batch and its cursor are written here in one transaction."""

    def pull(self) -> None:
        """Every table read up to the oldest transaction still open there, so nothing written late is skipped."""
        with self.remote.begin():
            statement = sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            upper = int(self.remote.execute(statement).scalar_one())
        for name, table in (
            ("training_jobs", self.jobs_table),
            ("job_attempts", rules.ATTEMPTS),
            ("model_artifacts", rules.ARTIFACTS),
            ("training_metrics_history", rules.METRICS),
            ("job_events", rules.EVENTS),
            ("ratings", rules.RATINGS),
        ):
            self._pull_table(name, table, upper)
        self.phase = ""

    def _pull_table(self, name: str, table: sa.Table, upper: int) -> None:
        """Rows written there since the pull cursor and before ``upper``, by (sync_xid, id)."""
        self.phase = name
        state = self.cursors.get(name)
        key = table.c.id
        selected = [*table.columns, sa.literal_column("sync_xid::text::bigint").label("_xid")]
        while True:
            statement = (
                sa.select(*selected)
                .where(*self._pull_window(key, state, upper))
                .order_by(sa.literal_column("sync_xid"), key)
                .limit(self.batch)
            )
            with self.remote.begin():
                rows = [dict(row) for row in self.remote.execute(statement).mappings()]
            if not rows:
                break
            with self.ledger.write() as session:
                local = session.connection()
                self._apply(name, local, rows)
                last = rows[-1]
                self.cursors.save(local, name, pull_xid=int(last["_xid"]), pull_pk=str(last["id"]))
            self.report.table(name).received += len(rows)
            self.progress(name, "pull", self.report.table(name).received)
            if len(rows) < self.batch:
                break
        self.cursors.save_now(name, pull_xid=upper, pull_pk=None, pulled_until=utcnow())

    @staticmethod
    def _pull_window(key: sa.Column[Any], state: Mapping[str, Any], upper: int) -> list[Any]:
        xid = int(state.get("pull_xid") or 0)
        below = sa.text("sync_xid < CAST(CAST(:upper AS text) AS xid8)").bindparams(upper=upper)
        if state.get("pull_pk") is None:
            return [sa.text("sync_xid >= CAST(CAST(:xid AS text) AS xid8)").bindparams(xid=xid), below]
        after = sa.bindparam("after", key_value(key, state["pull_pk"]), type_=key.type)
        same = sa.text("sync_xid = CAST(CAST(:xid AS text) AS xid8)").bindparams(xid=xid)
        later = sa.text("sync_xid > CAST(CAST(:xid_after AS text) AS xid8)").bindparams(xid_after=xid)
        return [sa.or_(later, sa.and_(same, key > after)), below]

    def _apply(self, name: str, local: sa.Connection, rows: list[dict[str, Any]]) -> None:
        counts = self.report.table(name)
        if name == "training_jobs":
            counts.changed_local += self._apply_jobs(local, rows)
            return
        self._ensure_local_jobs(local, {row["job_id"] for row in rows})
        table = {"job_attempts": rules.ATTEMPTS, "model_artifacts": rules.ARTIFACTS,
                 "training_metrics_history": rules.METRICS, "job_events": rules.EVENTS,
                 "ratings": rules.RATINGS}[name]  # fmt: skip
        statement = {
            "job_attempts": lambda: rules.upsert_attempts("sqlite", rules.synced_columns(rules.ATTEMPTS)),
            "model_artifacts": lambda: rules.upsert_artifacts("sqlite", rules.synced_columns(rules.ARTIFACTS)),
            "training_metrics_history": lambda: rules.upsert_metrics("sqlite"),
            "job_events": lambda: rules.insert_events("sqlite"),
            "ratings": lambda: rules.upsert_ratings("sqlite"),
        }[name]()
        values = [strip(table, row) for row in rows]
        appended = name in ("training_metrics_history", "job_events")
        newest = local.execute(sa.select(sa.func.max(table.c.id))).scalar() if appended else None
        counts.changed_local += changed(local, statement, values)
        state = self.cursors.get(name)
        if appended and int(state.get("push_rowid") or 0) >= int(newest or 0):
            # Everything here before this batch was pushed, so rows added now came from there: no need to
            # send them back.
            pushed = local.execute(sa.select(sa.func.max(table.c.id))).scalar()
            self.cursors.save(local, name, push_rowid=int(pushed or 0))

    def _apply_files(self, local: sa.Connection, rows: list[dict[str, Any]]) -> int:
        usable = [f for f in (local_file(row) for row in rows) if f is not None]
        if not usable:
            return 0
        columns = [c for c in self.file_columns if c in usable[0]]
        local.execute(
            rules.update_newer_files(rules.FILES, columns), [{f"v_{c}": f[c] for c in columns} for f in usable]
        )
        return changed(local, rules.insert_new_files("sqlite", rules.FILES), usable)

    def _apply_jobs(self, local: sa.Connection, rows: list[dict[str, Any]]) -> int:
        jobs = {uuid.UUID(str(row["id"])): local_job(row) for row in rows}
        wanted, tried = unknown_parents(jobs, set()), set()
        while wanted:
            tried |= wanted
            lacking = wanted - local_ids(local, rules.JOBS, wanted)
            parents = self.remote_rows(self.jobs_table, lacking) if lacking else []
            jobs.update({uuid.UUID(str(p["id"])): local_job(p) for p in parents})
            wanted = unknown_parents(jobs, tried)
        parents_here = local_ids(local, rules.JOBS, tried) | set(jobs)
        files = {j["training_file_id"] for j in jobs.values() if j["training_file_id"]}
        present = local_ids(local, rules.FILES, files)
        if files - present and self.files_table is not None:
            self._apply_files(local, self.remote_rows(self.files_table, files - present))
            present = local_ids(local, rules.FILES, files)
        known = local_ids(local, rules.JOBS, jobs)
        for job_id, job in jobs.items():
            if job["training_file_id"] not in present:
                job["training_file_id"] = None  # the dataset is not registered here
            if job["parent_job_id"] not in parents_here:
                job["parent_job_id"] = None  # the parent is gone there too
            live = job["status"] not in rules.TERMINAL_RANK
            foreign = job_id not in known and live
            job["lease_owner"] = rules.REMOTE_LEASE if foreign else None
            job["lease_expires_at"] = FAR_FUTURE if foreign else None
        statement = rules.upsert_jobs("sqlite", (*rules.JOB_COLUMNS, *rules.LEASE), local=True)
        return changed(local, statement, parents_first(list(jobs.values())))

    def _ensure_local_jobs(self, local: sa.Connection, ids: set[Any]) -> None:
        """Pull the jobs that rows about to be written belong to, when this ledger lacks them."""
        wanted = {uuid.UUID(str(i)) for i in ids}
        missing = wanted - local_ids(local, rules.JOBS, wanted)
        if missing:
            self._apply_jobs(local, self.remote_rows(self.jobs_table, missing))

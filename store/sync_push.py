"""Sync, push: what changed in this ledger since the last push, sent to Postgres in resumable batches."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from store import sync_rules as rules
from store.sync_context import SyncContext, changed, parents_first, plain, strip, unknown_parents, uuid_text


class PushPhase(SyncContext):
    """Push: each batch is committed there, then its cursor here (a batch cut off between is sent again)."""

    def push(self) -> None:
        """Files and jobs changed since the push cursor, then metrics and events added since it, then ratings
        changed since it."""
        if self.files_table is not None:
            self._push_changed("training_files", rules.FILES, self._send_files)
        self._push_changed("training_jobs", rules.JOBS, self._send_jobs)
        self._push_appended("training_metrics_history", rules.METRICS, self._send_metrics)
        self._push_appended("job_events", rules.EVENTS, self._send_events)
        self._push_changed("ratings", rules.RATINGS, self._send_ratings)
        self.phase = ""

    def _push_changed(self, name: str, table: sa.Table, send: Callable[[list[dict[str, Any]]], None]) -> None:
        """Rows changed since the push cursor, by (updated_at, id)."""
        self.phase = name
        state = self.cursors.get(name)
        while True:
            after_time, after_id = state.get("pushed_until"), state.get("push_id")
            statement = sa.select(table).order_by(table.c.updated_at, table.c.id).limit(self.batch)
            if after_time is not None:
                after = uuid.UUID(after_id) if after_id else uuid.UUID(int=0)
                statement = statement.where(
                    sa.or_(
                        table.c.updated_at > after_time,
                        sa.and_(table.c.updated_at == after_time, table.c.id > after),
                    )
                )
            rows = self.local_rows(statement)
            if not rows:
                return
            with self.remote.begin():
                send(rows)
            last = rows[-1]
            self.cursors.save_now(name, pushed_until=last["updated_at"], push_id=last["id"].hex)
            self.progress(name, "push", self.report.table(name).sent)
            if len(rows) < self.batch:
                return

    def _push_appended(self, name: str, table: sa.Table, send: Callable[[list[dict[str, Any]]], None]) -> None:
        """Rows added since the push cursor, by local row id."""
        self.phase = name
        state = self.cursors.get(name)
        while True:
            after = int(state.get("push_rowid") or 0)
            rows = self.local_rows(sa.select(table).where(table.c.id > after).order_by(table.c.id).limit(self.batch))
            if not rows:
                return
            with self.remote.begin():
                send(rows)
            self.cursors.save_now(name, push_rowid=int(rows[-1]["id"]))
            self.progress(name, "push", self.report.table(name).sent)
            if len(rows) < self.batch:
                return

    def _send(self, name: str, statement: Any, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        counts = self.report.table(name)
        counts.sent += len(rows)
        counts.changed_remote += changed(self.remote, statement, rows)

    def _send_files(self, rows: list[dict[str, Any]]) -> None:
        assert self.files_table is not None
        columns = self.file_columns
        values = [{c: plain(self.files_table, c, row[c]) for c in columns} for row in rows]
        update = rules.update_newer_files(self.files_table, columns)
        self.remote.execute(update, [{f"v_{c}": v for c, v in value.items()} for value in values])
        self._send("training_files", rules.insert_new_files("postgresql", self.files_table), values)

    def _send_jobs(self, rows: list[dict[str, Any]]) -> None:
        jobs = self._ready_for_remote(rows)
        columns = rules.JOB_COLUMNS
        statement = rules.upsert_jobs("postgresql", columns, local=False, table=self.jobs_table)
        self._send("training_jobs", statement, [{c: job[c] for c in columns} for job in jobs])
        ids = [job["id"] for job in rows]
        # A job's attempts and artifacts change with it (cost accrues, an evaluation fills in), so they
        # travel with it; so do its metric rows an evaluation filled in after they were first pushed.
        for name, table, upsert in (
            ("job_attempts", rules.ATTEMPTS, rules.upsert_attempts),
            ("model_artifacts", rules.ARTIFACTS, rules.upsert_artifacts),
        ):
            children = self.local_rows(sa.select(table).where(table.c.job_id.in_(ids)))
            statement = upsert("postgresql", rules.synced_columns(table))
            self._send(name, statement, [strip(table, child) for child in children])
        filled = self.local_rows(
            sa.select(rules.METRICS).where(rules.METRICS.c.job_id.in_(ids), rules.METRICS.c.eval_loss.isnot(None))
        )
        if filled:
            self.remote.execute(rules.upsert_metrics("postgresql"), [strip(rules.METRICS, m) for m in filled])

    def _send_metrics(self, rows: list[dict[str, Any]]) -> None:
        self._ensure_remote_jobs({row["job_id"] for row in rows})
        values = [strip(rules.METRICS, row) for row in rows]
        self._send("training_metrics_history", rules.upsert_metrics("postgresql"), values)

    def _send_events(self, rows: list[dict[str, Any]]) -> None:
        self._ensure_remote_jobs({row["job_id"] for row in rows})
        self._send("job_events", rules.insert_events("postgresql"), [strip(rules.EVENTS, r) for r in rows])

    def _send_ratings(self, rows: list[dict[str, Any]]) -> None:
        self._ensure_remote_jobs({row["job_id"] for row in rows})
        self._send("ratings", rules.upsert_ratings("postgresql"), [dict(row) for row in rows])

    def _ensure_remote_jobs(self, ids: set[uuid.UUID]) -> None:
        """Push jobs that rows about to be pushed belong to, if the database lacks them (created meanwhile)."""
        missing = ids - self.remote_ids(self.jobs_table, ids)
        if missing:
            rows = self.local_rows(sa.select(rules.JOBS).where(rules.JOBS.c.id.in_(list(missing))))
            jobs = self._ready_for_remote(rows)
            statement = rules.upsert_jobs("postgresql", rules.JOB_COLUMNS, local=False, table=self.jobs_table)
            self.remote.execute(statement, [{c: job[c] for c in rules.JOB_COLUMNS} for job in jobs])

    def _ready_for_remote(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Jobs as the database takes them: parents it lacks first, references it cannot hold unset."""
        jobs = {row["id"]: dict(row) for row in rows}
        wanted, tried = unknown_parents(jobs, set()), set()
        while wanted:
            tried |= wanted
            lacking = list(wanted - self.remote_ids(self.jobs_table, wanted))
            parents = self.local_rows(sa.select(rules.JOBS).where(rules.JOBS.c.id.in_(lacking))) if lacking else []
            jobs.update({p["id"]: dict(p) for p in parents})
            wanted = unknown_parents(jobs, tried)
        if self.files_table is not None:
            files = {j["training_file_id"] for j in jobs.values() if j["training_file_id"]}
            present = self.remote_ids(self.files_table, files)
            for job in jobs.values():
                if job["training_file_id"] not in present:
                    job["training_file_id"] = None  # filled in by a later push, once the file is there
        for job in jobs.values():
            job["created_by"] = uuid_text(job["created_by"]) or self.owner
        return parents_first(list(jobs.values()))

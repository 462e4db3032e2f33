"""Helpers of the Supabase tests: ledgers with jobs in them, rows of a database, and snapshots to compare."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa

import presets
from store import sync as sync_module
from store import sync_rules as rules
from store.attempts import accrue, start_attempt
from store.db import Ledger
from store.files import register_file
from store.ingest import ingest
from store.jobs import create_job, transition
from store.status import JobStatus
from store.supabase import SCHEMA

TABLES = ("training_jobs", "job_attempts", "model_artifacts", "training_metrics_history", "job_events")
TS = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def pg_rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


# --- building ledgers ----------------------------------------------------------------------------------


def job_events_for(job_id: uuid.UUID, *, steps: int, finish: bool) -> list[dict[str, Any]]:
    stamp = TS.isoformat()
    events: list[dict[str, Any]] = [
        {"type": "stage", "stage": "preprocessing"},
        {
            "type": "dataset",
            "total_steps": steps,
            "examples": 5,
            "train_examples": 4,
            "eval_examples": 1,
            "tokens": 900,
            "supervised_tokens": 600,
            "packed_sequences": 4,
            "steps_per_epoch": steps,
            "epochs": 1,
        },
        {"type": "stage", "stage": "model_loading"},
        {"type": "stage", "stage": "training"},
    ]
    for step in range(1, steps + 1):
        events.append(
            {
                "type": "metrics",
                "step": step,
                "total_steps": steps,
                "epoch": step / steps,
                "loss": 3 - step / steps,
                "elapsed": step * 2.0,
            }
        )
    events.append(
        {"type": "metrics", "step": steps, "total_steps": steps, "epoch": 1.0, "eval_loss": 2.4, "elapsed": steps * 2.0}
    )
    if finish:
        events += [
            {"type": "stage", "stage": "evaluating"},
            {"type": "eval", "base_perplexity": 9.0, "adapter_perplexity": 7.0, "eval_loss": 1.9, "tokens": 300},
            {"type": "stage", "stage": "packaging"},
            {"type": "artifact", "kind": "adapter", "path": f"/w/{job_id}/a.zip", "size_bytes": 9, "sha256": "a" * 64},
            {"type": "stage", "stage": "uploading"},
            {"type": "stage", "stage": "completed"},
        ]
    return [{"seq": seq, "ts": stamp, **event} for seq, event in enumerate(events, start=1)]


def make_job(
    ledger: Ledger, name: str, *, steps: int = 5, finish: bool = True, parent: uuid.UUID | None = None
) -> uuid.UUID:
    digest = uuid.uuid5(uuid.NAMESPACE_URL, name).hex * 2
    dataset = register_file(
        ledger, name=f"{name}.json", storage_path=f"/data/{name}.json", sha256=digest, format="brightrun", size_bytes=10
    )
    job = create_job(
        ledger, presets.get("smoke").to_spec("d.json"), name=name, training_file_id=dataset.id, parent_job_id=parent
    )
    attempt = start_attempt(ledger, job.id, provider="local", handle={"pid": 1}, rate_usd_per_hour=1.0, gpu_count=0)
    transition(ledger, job.id, JobStatus.PROVISIONING)
    ingest(ledger, job.id, job_events_for(job.id, steps=steps, finish=finish))
    accrue(ledger, attempt.id or 0, outcome="completed" if finish else None)
    return job.id


def snapshot_ledger(ledger: Ledger) -> dict[str, dict[Any, Any]]:
    with ledger.read() as session:
        conn = session.connection()
        return {
            name: _index(name, [dict(r) for r in conn.execute(sa.select(ledger_table(name))).mappings()])
            for name in TABLES
        }


def snapshot_remote(url: str) -> dict[str, dict[Any, Any]]:
    engine = sa.create_engine(sync_module.database_url(url), connect_args={"prepare_threshold": None})
    tables = {"training_jobs": rules.remote_jobs_table()}
    try:
        with engine.connect().execution_options(schema_translate_map={None: SCHEMA}) as conn:
            out = {}
            for name in TABLES:
                table = tables.get(name, ledger_table(name))
                out[name] = _index(name, [dict(r) for r in conn.execute(sa.select(table)).mappings()])
            return out
    finally:
        engine.dispose()


def ledger_table(name: str) -> sa.Table:
    return {
        "training_jobs": rules.JOBS, "job_attempts": rules.ATTEMPTS, "model_artifacts": rules.ARTIFACTS,
        "training_metrics_history": rules.METRICS, "job_events": rules.EVENTS,
    }[name]  # fmt: skip


def _index(name: str, rows: list[dict[str, Any]]) -> dict[Any, Any]:
    """Rows by their natural key, with only the columns that travel, in comparable form."""
    table = ledger_table(name)
    keys = rules.LOCAL_IDS.get(name, ("id",))
    columns = [c for c in rules.synced_columns(table) if c not in ("training_file_id", "created_by")]
    indexed = {}
    for row in rows:
        key = tuple(str(row[k]) for k in keys)
        indexed[key] = {c: _plain(row[c]) for c in columns}
    return indexed


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def run_script(url: str, sql: str) -> list[str]:
    """Run a whole SQL script as psql -f would; the NOTICEs it raised, in order."""
    notices: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary or ""))
        conn.execute(sql)  # type: ignore[arg-type]
    return notices


# The web app's own training_files table, as its migrations create it (what lorapod's jobs may point at).
WEB_APP_TRAINING_FILES = """
CREATE TABLE public.training_files (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, storage_path text NOT NULL,
    sha256 text NOT NULL UNIQUE, format text NOT NULL, size_bytes bigint NOT NULL DEFAULT 0,
    conversation_count integer NOT NULL DEFAULT 0, total_training_pairs integer NOT NULL DEFAULT 0,
    trainable_pairs integer NOT NULL DEFAULT 0, token_count integer, validation jsonb NOT NULL DEFAULT '{}',
    created_by uuid, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now()
)
"""

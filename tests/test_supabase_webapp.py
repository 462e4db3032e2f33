"""lorapod beside the Bright Run web app in one Supabase database, on a real PostgreSQL on 127.0.0.1.

The web app's own migrations (the data owner's files, read from ../shared/data/webapp) create tables with
lorapod's names in other shapes. lorapod's migration leaves every one of them, their columns and rows as
they were; sync works through it; the rollback removes lorapod and nothing else, and says what it kept. A
project that applied lorapod 001 into ``public`` is upgraded with every row kept; conflicts are named
before anything changes; sync tells a missing schema from a foreign table of the same name.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from store.db import Ledger
from store.errors import SyncSchemaConflict, SyncSchemaMissing
from store.jobs import get_job
from store.supabase import migration_sql, rollback_sql
from store.sync import sync
from tests.conftest import run_cli
from tests.standins.postgres import PostgresServer
from tests.supabase_helpers import TABLES, make_job, pg_rows, run_script, snapshot_ledger, snapshot_remote

ROOT = Path(__file__).resolve().parent.parent
WEBAPP = ROOT.parent / "shared" / "data" / "webapp"
USER = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
WEBAPP_ROWS = f"""
INSERT INTO auth.users (id, email) VALUES ('{USER}', 'owner@brightrun.test');
INSERT INTO public.training_files (id, name, json_file_path, jsonl_file_path, conversation_count, created_by)
VALUES ('00000000-0000-4000-8000-0000000000f1', 'persona set', 'tf/a.json', 'tf/a.jsonl', 3, '{USER}');
INSERT INTO public.training_file_conversations (training_file_id, conversation_id, added_by)
VALUES ('00000000-0000-4000-8000-0000000000f1', '00000000-0000-4000-8000-0000000000c1', '{USER}');
INSERT INTO public.datasets (id, user_id, name, storage_path, file_name, file_size)
VALUES ('00000000-0000-4000-8000-0000000000d1', '{USER}', 'advisor v4', 'u/ds.json', 'ds.json', 123);
INSERT INTO public.training_jobs (id, user_id, dataset_id, preset_id, hyperparameters, gpu_config, total_epochs,
                                  estimated_total_cost, status, current_stage)
VALUES ('00000000-0000-4000-8000-0000000000b1', '{USER}', '00000000-0000-4000-8000-0000000000d1', 'balanced',
        '{{"learning_rate": 0.0002}}', '{{"gpu": "H100"}}', 3, 12.5, 'training', 'training');
INSERT INTO public.metrics_points (job_id, epoch, step, training_loss, learning_rate)
VALUES ('00000000-0000-4000-8000-0000000000b1', 1, 10, 1.234, 0.0002);
INSERT INTO public.model_artifacts (id, user_id, job_id, dataset_id, name, quality_metrics, training_summary,
                                    configuration, artifacts)
VALUES ('00000000-0000-4000-8000-0000000000a1', '{USER}', '00000000-0000-4000-8000-0000000000b1',
        '00000000-0000-4000-8000-0000000000d1', 'advisor', '{{}}', '{{}}', '{{}}', '{{"adapter": "a.zip"}}');
UPDATE public.training_jobs SET artifact_id = '00000000-0000-4000-8000-0000000000a1';
INSERT INTO public.cost_records (user_id, job_id, cost_type, amount, billing_period)
VALUES ('{USER}', '00000000-0000-4000-8000-0000000000b1', 'gpu', 3.5, '2026-12-01');
INSERT INTO public.notifications (user_id, type, title, message) VALUES ('{USER}', 'job', 'Training', 'started');
INSERT INTO storage.buckets (id, name, public) VALUES ('lora-datasets', 'lora-datasets', false);
INSERT INTO storage.objects (bucket_id, name) VALUES ('lora-datasets', 'u/ds.json');
CREATE POLICY "Users read datasets" ON storage.objects FOR SELECT TO authenticated
    USING (bucket_id = 'lora-datasets');
"""
# Everything outside lorapod's schema that a migration could change, as comparable rows. lorapod's own
# bucket and storage policies are left out: they are the only things it may add there.
SNAPSHOT = {
    "schemas": "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('lorapod', 'information_schema') "
    "AND nspname NOT LIKE 'pg\\_%%' ORDER BY 1",
    "extensions": "SELECT extname, extversion FROM pg_extension ORDER BY 1",
    "relations": "SELECT c.oid::regclass::text, c.relkind, c.relrowsecurity, obj_description(c.oid, 'pg_class') "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname IN ('public', 'auth', 'storage') ORDER BY 1",
    "columns": "SELECT table_schema, table_name, column_name, ordinal_position, data_type, is_nullable, "
    "column_default FROM information_schema.columns WHERE table_schema IN ('public', 'auth', 'storage') "
    "ORDER BY 1, 2, 4",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE connamespace IN ('public'::regnamespace, 'auth'::regnamespace, 'storage'::regnamespace) ORDER BY 1, 2",
    "indexes": "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
    "WHERE schemaname IN ('public', 'auth', 'storage') ORDER BY 1, 2, 3",
    "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
    "WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE 'lorapod.%%' ORDER BY 1, 2",
    "policies": "SELECT schemaname, tablename, policyname, cmd, roles::text, qual, with_check FROM pg_policies "
    "WHERE schemaname <> 'lorapod' AND policyname NOT LIKE 'lorapod:%%' ORDER BY 1, 2, 3",
    "functions": "SELECT p.oid::regprocedure::text, md5(p.prosrc) FROM pg_proc p "
    "WHERE p.pronamespace IN ('public'::regnamespace, 'auth'::regnamespace) ORDER BY 1",
    # lorapod's own role (a pod's upload credential) is granted storage's tables; no one else gains anything.
    "grants": "SELECT table_schema, table_name, grantee, privilege_type FROM information_schema.role_table_grants "
    "WHERE table_schema IN ('public', 'auth', 'storage') AND grantee <> 'lorapod_job_uploader' ORDER BY 1, 2, 3, 4",
}


@pytest.fixture
def webapp_sql() -> list[str]:
    """The web app's migrations, in the order the data owner applies them."""
    files = sorted(WEBAPP.glob("*.sql")) if WEBAPP.is_dir() else []
    if not files:
        pytest.skip(f"the web app's migrations are not here ({WEBAPP}: the data owner's files, not in this repo)")
    return [path.read_text(encoding="utf-8") for path in files]


@pytest.fixture
def webapp_db(postgres: PostgresServer, webapp_sql: list[str]) -> str:
    """A database as the user's Supabase project is: the web app's tables, with rows, and no lorapod."""
    url = postgres.database()
    for script in webapp_sql:
        run_script(url, script)
    run_script(url, WEBAPP_ROWS)
    return url


def outside_lorapod(url: str) -> dict[str, Any]:
    """The web app's schema and rows, and everything else outside schema lorapod (see SNAPSHOT)."""
    shot: dict[str, Any] = {name: pg_rows(url, sql) for name, sql in SNAPSHOT.items()}
    tables = pg_rows(
        url,
        "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables "
        "WHERE schemaname IN ('public', 'auth', 'storage') ORDER BY 1",
    )
    for (table,) in tables:
        own = " WHERE coalesce(t.bucket_id, '') <> 'model-artifacts'" if table == "storage.objects" else ""
        own = " WHERE t.id <> 'model-artifacts'" if table == "storage.buckets" else own
        shot[table] = pg_rows(url, f"SELECT to_jsonb(t)::text FROM {table} t{own} ORDER BY 1")
    return shot


def kept_here(report: list[str]) -> list[str]:
    """The rollback's "kept" lines about this database: a role belongs to the whole server, and the other
    databases of the test server (one per test) may still use lorapod's."""
    return [line for line in report if "kept" in line and line not in _server_wide(report)]


def _server_wide(report: list[str]) -> list[str]:
    return [line for line in report if "another database on this server" in line]


def _as(conn: psycopg.Connection[Any], user: uuid.UUID) -> None:
    conn.execute("SET ROLE authenticated")
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (json.dumps({"sub": str(user)}),))


# --- beside the web app --------------------------------------------------------------------------------


def test_lorapod_beside_the_web_app_leaves_its_tables_columns_and_rows_as_they_were(
    webapp_db: str, two_ledgers: tuple[Ledger, Ledger]
) -> None:
    before = outside_lorapod(webapp_db)
    assert before["public.training_jobs"] and before["public.model_artifacts"]  # the app's rows are there

    first = run_script(webapp_db, migration_sql())
    run_script(webapp_db, migration_sql())  # idempotent
    assert "public.training_jobs is not lorapod's (no lorapod marker): left as it is" in first
    assert outside_lorapod(webapp_db) == before

    a, b = two_ledgers
    mine = [make_job(a, "a-done"), make_job(a, "a-live", finish=False)]
    theirs = make_job(b, "b-done", steps=7)
    sync(a, webapp_db, owner=str(USER))
    sync(b, webapp_db, owner=str(USER))
    sync(a, webapp_db)
    remote = snapshot_remote(webapp_db)
    assert len(remote["training_jobs"]) == 3
    assert snapshot_ledger(a) == remote == snapshot_ledger(b)
    assert get_job(b, mine[0]).status == "completed" and get_job(a, theirs).status == "completed"
    assert outside_lorapod(webapp_db) == before  # sync wrote into lorapod's tables only

    # The web app's pages can read lorapod's jobs in their own shapes, as the signed-in user.
    with psycopg.connect(webapp_db) as conn:
        _as(conn, USER)
        jobs = {
            r[0]: r[1:]
            for r in conn.execute("SELECT id, status, current_stage, progress FROM lorapod.web_training_jobs")
        }
        assert jobs[mine[0]] == ("completed", "completed", 100)
        assert jobs[mine[1]] == ("training", "training", 100)  # every step done, not yet evaluated
        points = conn.execute("SELECT count(*) FROM lorapod.web_metrics_points WHERE job_id = %s", (theirs,)).fetchone()
        assert points == (7,)
        artifact = conn.execute(
            "SELECT artifacts ->> 'type', quality_metrics FROM lorapod.web_model_artifacts WHERE job_id = %s",
            (mine[0],),
        ).fetchone()
        assert artifact is not None and artifact[0] == "adapter"

    report = run_script(webapp_db, rollback_sql())
    again = run_script(webapp_db, rollback_sql())  # safe twice
    assert "lorapod rollback: removed lorapod.training_jobs" in report
    assert "lorapod rollback: removed schema lorapod" in report
    assert not kept_here(report)
    assert [line for line in again if line.startswith("lorapod") and line not in _server_wide(again)] == [
        "lorapod rollback: there is no schema lorapod; nothing else to remove"
    ]
    assert outside_lorapod(webapp_db) == before
    assert pg_rows(webapp_db, "SELECT count(*) FROM storage.buckets WHERE id = 'model-artifacts'") == [(0,)]
    assert pg_rows(webapp_db, "SELECT count(*) FROM pg_policies WHERE policyname LIKE 'lorapod:%%'") == [(0,)]
    assert pg_rows(
        webapp_db, "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = 'lorapod_job_uploader'"
    ) == [(0,)]


def test_the_rollback_keeps_what_lorapod_did_not_make_and_says_why(postgres: PostgresServer) -> None:
    url = postgres.database()
    run_script(url, migration_sql())
    # A view someone built on lorapod's jobs, a table of their own in its schema, files still in the bucket.
    run_script(
        url,
        "CREATE VIEW public.job_board AS SELECT id, status FROM lorapod.training_jobs;"
        "CREATE TABLE lorapod.my_notes (id int);"
        "INSERT INTO storage.objects (bucket_id, name) VALUES ('model-artifacts', 'jobs/x/adapter.zip');",
    )
    report = run_script(url, rollback_sql())
    kept = "\n".join(kept_here(report))
    assert "kept lorapod.my_notes: no lorapod marker, so lorapod did not create it" in kept
    assert "kept lorapod.training_jobs: cannot drop table lorapod.training_jobs because other objects depend" in kept
    assert "kept storage bucket model-artifacts: it still holds 1 objects" in kept
    assert "kept schema lorapod: it still holds what is listed above" in kept
    assert {
        "lorapod rollback: removed lorapod.job_events",
        "lorapod rollback: removed lorapod.web_training_jobs",
    } <= set(report)
    assert pg_rows(url, "SELECT count(*) FROM public.job_board") == [(0,)]  # the view still works

    # Once the user has dealt with what was kept, the rollback finishes the job.
    run_script(url, "DROP VIEW public.job_board; DROP TABLE lorapod.my_notes; DELETE FROM storage.objects;")
    report = run_script(url, rollback_sql())
    assert not kept_here(report)
    assert "lorapod rollback: removed storage bucket model-artifacts" in report
    assert pg_rows(url, "SELECT to_regnamespace('lorapod'), count(*) FROM storage.buckets") == [(None, 0)]


def test_a_bucket_lorapod_did_not_create_outlives_its_rollback(postgres: PostgresServer) -> None:
    url = postgres.database()
    run_script(
        url, "INSERT INTO storage.buckets (id, name, public) VALUES ('model-artifacts', 'model-artifacts', false)"
    )
    run_script(url, migration_sql())
    report = run_script(url, rollback_sql())
    assert "lorapod rollback: kept storage bucket model-artifacts: lorapod did not create it" in report
    assert pg_rows(url, "SELECT count(*) FROM storage.buckets") == [(1,)]


def test_the_old_rollback_no_longer_drops_the_web_apps_tables(webapp_db: str) -> None:
    before = outside_lorapod(webapp_db)
    report = run_script(webapp_db, rollback_sql("001_lorapod"))
    assert "lorapod rollback: kept public.training_jobs: no lorapod marker, so lorapod did not create it" in report
    assert "lorapod rollback: kept public.model_artifacts: no lorapod marker, so lorapod did not create it" in report
    assert outside_lorapod(webapp_db) == before


# --- conflicts -----------------------------------------------------------------------------------------


def test_conflicts_are_named_before_anything_changes(postgres: PostgresServer) -> None:
    url = postgres.database()
    run_script(
        url,
        "CREATE SCHEMA lorapod; CREATE TABLE lorapod.training_jobs (id uuid PRIMARY KEY, title text);"
        "INSERT INTO storage.buckets (id, name, public) VALUES ('model-artifacts', 'model-artifacts', true);",
    )
    with pytest.raises(psycopg.errors.RaiseException) as refused:
        run_script(url, migration_sql())
    message = str(refused.value)
    assert message.startswith("lorapod 002 changed nothing: 3 conflict(s):")
    assert "schema lorapod exists but lorapod did not create it" in message
    assert "lorapod.training_jobs exists but is not lorapod's" in message
    assert "storage bucket model-artifacts exists and is public" in message
    assert pg_rows(
        url, "SELECT relname FROM pg_class WHERE relnamespace = 'lorapod'::regnamespace AND relkind = 'r'"
    ) == [("training_jobs",)]
    assert pg_rows(url, "SELECT count(*) FROM pg_policies WHERE policyname LIKE 'lorapod:%%'") == [(0,)]


# --- upgrade from lorapod 001 in public ----------------------------------------------------------------

LEGACY_ROWS = """
INSERT INTO auth.users (id, email) VALUES ('00000000-0000-4000-8000-00000000a11c', 'a@x');
INSERT INTO public.training_jobs (id, name, status, stage, base_model, hyperparameters, current_step, total_steps,
                                  actual_cost_usd, created_by, spec, provider, last_event_seq, updated_at)
VALUES ('00000000-0000-4000-8000-000000000001', 'parent', 'completed', 'completed', 'm', '{"num_epochs": 2}', 4, 4,
        0.5, '00000000-0000-4000-8000-00000000a11c', '{"preset": "smoke"}', 'runpod', 9, now() - interval '1 day'),
       ('00000000-0000-4000-8000-000000000002', 'retry', 'training', 'training', 'm', '{}', 1, 4,
        0.1, NULL, '{}', 'local', 3, now() - interval '1 hour');
UPDATE public.training_jobs SET parent_job_id = '00000000-0000-4000-8000-000000000001'
WHERE id = '00000000-0000-4000-8000-000000000002';
INSERT INTO public.job_attempts (job_id, number, provider, handle, cost_usd, outcome)
VALUES ('00000000-0000-4000-8000-000000000001', 1, 'runpod', '{"pod_id": "p1"}', 0.5, 'completed');
INSERT INTO public.model_artifacts (job_id, artifact_type, storage_path, size_bytes, sha256)
VALUES ('00000000-0000-4000-8000-000000000001', 'adapter', 'model-artifacts/jobs/1/adapter.zip', 10, repeat('a', 64));
INSERT INTO public.training_metrics_history (job_id, step, loss, learning_rate)
SELECT '00000000-0000-4000-8000-000000000001', s, 3.0 - s / 2.0, 0.0002 FROM generate_series(0, 4) s;
INSERT INTO public.job_events (job_id, seq, type, payload)
SELECT '00000000-0000-4000-8000-000000000001', s, 'stage', jsonb_build_object('n', s) FROM generate_series(1, 9) s;
INSERT INTO storage.objects (bucket_id, name)
VALUES ('model-artifacts', 'jobs/00000000-0000-4000-8000-000000000001/adapter.zip');
"""


def _all_rows(url: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    return {t: pg_rows(url, f"SELECT to_jsonb(t)::text FROM {schema}.{t} t ORDER BY 1") for t in TABLES}


def test_an_upgrade_from_001_in_public_moves_every_row_into_lorapods_schema(
    postgres: PostgresServer, ledger: Ledger
) -> None:
    url = postgres.database()
    run_script(url, migration_sql("001_lorapod"))
    run_script(url, LEGACY_ROWS)
    before = _all_rows(url, "public")
    assert sum(len(rows) for rows in before.values()) == 2 + 1 + 1 + 5 + 9

    notices = run_script(url, migration_sql())
    run_script(url, migration_sql())  # idempotent after the move too
    assert [n for n in notices if n.startswith("moved")] == [
        f"moved public.{t} to lorapod.{t}, rows included" for t in TABLES
    ]
    assert _all_rows(url, "lorapod") == before  # every row, every value (sync_xid included)
    assert pg_rows(
        url, "SELECT to_regclass('public.training_jobs'), to_regprocedure('public.lorapod_stamp_sync_xid()')"
    ) == [(None, None)]
    assert pg_rows(
        url, "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'fk_training_jobs_training_file_id%%'"
    ) == [(0,)]

    # The moved tables work as freshly made ones do: stamped on write, synced, shown to their owner only.
    run_script(url, "UPDATE lorapod.training_jobs SET name = 'renamed' WHERE name = 'retry'")
    report = sync(ledger, url)
    assert report.table("training_jobs").received == 2 and report.table("job_events").received == 9
    assert get_job(ledger, uuid.UUID("00000000-0000-4000-8000-000000000002")).name == "renamed"
    with psycopg.connect(url) as conn:
        _as(conn, USER)
        assert conn.execute("SELECT name FROM lorapod.training_jobs").fetchall() == [("parent",)]
        assert conn.execute("SELECT count(*) FROM storage.objects").fetchone() == (1,)

    # And rolling back removes them, but keeps the bucket that still holds the adapter.
    kept = kept_here(run_script(url, rollback_sql()))
    assert kept == [
        "lorapod rollback: kept storage bucket model-artifacts: it still holds 1 objects; empty it from the "
        "dashboard or the Storage API, then run this script again",
        "lorapod rollback: kept lorapod.created_outside: it records that lorapod created the bucket, for the "
        "next run of this script",
        "lorapod rollback: kept schema lorapod: it still holds what is listed above",
    ]


def test_an_unmarked_001_in_public_is_left_where_it_is(postgres: PostgresServer) -> None:
    url = postgres.database()
    run_script(url, migration_sql("001_lorapod"))
    run_script(url, LEGACY_ROWS)
    for table in TABLES:  # as 001 was before it wrote the marker
        run_script(url, f"COMMENT ON TABLE public.{table} IS NULL")
    before = _all_rows(url, "public")
    notices = run_script(url, migration_sql())
    assert "public.training_jobs is not lorapod's (no lorapod marker): left as it is" in notices
    assert _all_rows(url, "public") == before
    assert pg_rows(url, "SELECT count(*) FROM lorapod.training_jobs") == [(0,)]


# --- what sync says ------------------------------------------------------------------------------------


def test_sync_tells_a_missing_schema_from_a_foreign_table(
    webapp_db: str, postgres: PostgresServer, ledger: Ledger
) -> None:
    with pytest.raises(SyncSchemaMissing) as missing:
        sync(ledger, webapp_db)
    assert "there is no schema lorapod, where lorapod's tables live" in str(missing.value)
    assert "public.training_jobs, public.model_artifacts there belong to another app" in str(missing.value)
    assert "apply the migration" in str(missing.value)

    foreign = postgres.database()
    run_script(foreign, migration_sql())
    run_script(
        foreign,
        "ALTER TABLE lorapod.job_events RENAME TO job_events_old;"
        "CREATE TABLE lorapod.job_events (id bigint, note text)",
    )
    with pytest.raises(SyncSchemaConflict, match=r"has lorapod\.job_events, but not lorapod's: a table of another app"):
        sync(ledger, foreign)
    result = run_cli("sync", env={"SUPABASE_DB_URL": foreign})
    assert result.exit_code == 1 and "a table of another app has that name" in result.output
    assert "Traceback" not in result.output

    legacy = postgres.database()
    run_script(legacy, migration_sql("001_lorapod"))
    with pytest.raises(SyncSchemaMissing, match=r"lorapod's tables are still in public \(lorapod 001: training_jobs"):
        sync(ledger, legacy)

"""The Supabase migration of the `lorapod` schema on real PostgreSQL: applied twice, rolled back, its checks,
and row-level security for the web app's users."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from store.db import Ledger
from store.supabase import migration_sql, rollback_sql
from store.sync import sync
from tests.standins.postgres import PostgresServer, execute_script
from tests.supabase_helpers import (
    TABLES,
    WEB_APP_TRAINING_FILES,
    make_job,
    pg_rows,
)

ROOT = Path(__file__).resolve().parent.parent


# --- the migration -------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_training_files", [False, True], ids=["without-training_files", "with-training_files"])
def test_migration_applies_twice_and_rolls_back(postgres: PostgresServer, with_training_files: bool) -> None:
    url = postgres.database()
    if with_training_files:
        execute_script(url, WEB_APP_TRAINING_FILES)
    execute_script(url, migration_sql())
    execute_script(url, migration_sql())  # idempotent

    present = {r[0] for r in pg_rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'lorapod'")}
    assert set(TABLES) <= present
    secured = dict(
        pg_rows(
            url,
            "SELECT relname, relrowsecurity FROM pg_class WHERE relnamespace = 'lorapod'::regnamespace "
            "AND relname = ANY(%s)",
            list(TABLES),
        )
    )
    assert secured == dict.fromkeys(TABLES, True)
    assert pg_rows(url, "SELECT id, public FROM storage.buckets") == [("model-artifacts", False)]
    policies = pg_rows(url, "SELECT count(*) FROM pg_policies WHERE policyname LIKE 'lorapod:%%'")[0][0]
    # jobs, the five child tables (ratings too), storage.objects, and a pod's upload credential's four — none doubled
    assert policies == 2 + 2 * 5 + 3 + 4
    foreign_key = pg_rows(
        url,
        "SELECT count(*) FROM pg_constraint WHERE conname = 'fk_training_jobs_training_file_id_training_files'",
    )[0][0]
    assert foreign_key == 0  # lorapod's schema refers to no table of the web app's
    checks = {r[0] for r in pg_rows(url, "SELECT conname FROM pg_constraint WHERE conname LIKE 'ck_%%'")}
    assert {"ck_training_jobs_status", "ck_model_artifacts_artifact_type", "ck_model_artifacts_sha256"} <= checks

    execute_script(url, rollback_sql())
    execute_script(url, rollback_sql())  # idempotent too
    assert pg_rows(url, "SELECT to_regnamespace('lorapod')") == [(None,)]
    left = {r[0] for r in pg_rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert ("training_files" in left) is with_training_files
    assert pg_rows(url, "SELECT count(*) FROM storage.buckets")[0][0] == 0
    assert pg_rows(url, "SELECT count(*) FROM pg_policies WHERE policyname LIKE 'lorapod:%%'")[0][0] == 0
    execute_script(url, migration_sql())  # and it applies again after a rollback


def test_migration_checks_refuse_bad_rows(db: str) -> None:
    job = uuid.uuid4()
    execute_script(db, f"INSERT INTO lorapod.training_jobs (id, base_model) VALUES ('{job}', 'm')")
    for bad in (
        f"UPDATE lorapod.training_jobs SET status = 'running' WHERE id = '{job}'",
        f"INSERT INTO lorapod.model_artifacts (job_id, artifact_type, storage_path) VALUES ('{job}', 'weights', 'p')",
        "INSERT INTO lorapod.model_artifacts (job_id, artifact_type, storage_path, sha256) "
        f"VALUES ('{job}', 'adapter', 'p', 'xyz')",
        f"INSERT INTO lorapod.training_metrics_history (job_id, step) VALUES ('{job}', -1)",
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            execute_script(db, bad)


def test_rollback_keeps_a_bucket_that_still_holds_files(db: str) -> None:
    execute_script(db, "INSERT INTO storage.objects (bucket_id, name) VALUES ('model-artifacts', 'jobs/x/a.zip')")
    execute_script(db, rollback_sql())
    assert pg_rows(db, "SELECT id FROM storage.buckets") == [("model-artifacts",)]
    assert pg_rows(db, "SELECT count(*) FROM pg_policies WHERE policyname LIKE 'lorapod:%%'")[0][0] == 0


# --- row-level security --------------------------------------------------------------------------------


def _as_user(conn: psycopg.Connection[Any], user: uuid.UUID | None, role: str = "authenticated") -> None:
    conn.execute(f"SET ROLE {role}")
    claims = json.dumps({"sub": str(user), "role": role}) if user else ""
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", (claims,))


def test_row_level_security_shows_users_only_their_own_jobs(db: str, ledger: Ledger) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    execute_script(db, f"INSERT INTO auth.users (id, email) VALUES ('{alice}', 'a@x'), ('{bob}', 'b@x')")
    # Alice's jobs arrive by sync (owner stamped on push); Bob's are written by the web app as him.
    mine = make_job(ledger, "alice-1")
    sync(ledger, db, owner=str(alice))
    bobs = uuid.uuid4()
    with psycopg.connect(db) as conn:
        _as_user(conn, bob)
        conn.execute(
            "INSERT INTO lorapod.training_jobs (id, base_model) VALUES (%s, 'm')", (bobs,)
        )  # created_by defaults to him
        conn.execute("INSERT INTO lorapod.job_events (job_id, seq, type) VALUES (%s, 1, 'stage')", (bobs,))
        conn.commit()
    with psycopg.connect(db) as conn:  # uploads come from the engine, with the service-role key
        _as_user(conn, None, "service_role")
        conn.execute(
            "INSERT INTO storage.objects (bucket_id, name) VALUES ('model-artifacts', %s), ('model-artifacts', %s)",
            (f"jobs/{bobs}/adapter.zip", f"jobs/{mine}/adapter.zip"),
        )
        conn.commit()

    def visible(user: uuid.UUID | None, role: str = "authenticated") -> dict[str, set[str]]:
        with psycopg.connect(db) as conn:
            _as_user(conn, user, role)
            return {
                "jobs": {str(r[0]) for r in conn.execute("SELECT id FROM lorapod.training_jobs")},
                "events": {str(r[0]) for r in conn.execute("SELECT DISTINCT job_id FROM lorapod.job_events")},
                "metrics": {
                    str(r[0]) for r in conn.execute("SELECT DISTINCT job_id FROM lorapod.training_metrics_history")
                },
                "objects": {r[0].split("/")[1] for r in conn.execute("SELECT name FROM storage.objects")},
                # the web app's read-only views: the reader's own row-level security
                "views": {str(r[0]) for r in conn.execute("SELECT id FROM lorapod.web_training_jobs")}
                | {str(r[0]) for r in conn.execute("SELECT DISTINCT job_id FROM lorapod.web_metrics_points")},
            }

    assert visible(alice) == {
        "jobs": {str(mine)},
        "events": {str(mine)},
        "metrics": {str(mine)},
        "objects": {str(mine)},
        "views": {str(mine)},
    }
    assert visible(bob) == {
        "jobs": {str(bobs)},
        "events": {str(bobs)},
        "metrics": set(),
        "objects": {str(bobs)},
        "views": {str(bobs)},
    }
    everyone = visible(None, "service_role")
    assert everyone["jobs"] == everyone["views"] == {str(mine), str(bobs)}
    assert visible(None)["jobs"] == set()  # signed in as nobody: nothing

    with psycopg.connect(db) as conn:
        _as_user(conn, alice)
        assert conn.execute("UPDATE lorapod.training_jobs SET name = 'mine now' WHERE id = %s", (bobs,)).rowcount == 0
        assert conn.execute("DELETE FROM lorapod.training_jobs WHERE id = %s", (bobs,)).rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # a job in Bob's name
            conn.execute(
                "INSERT INTO lorapod.training_jobs (id, base_model, created_by) VALUES (%s, 'm', %s)",
                (uuid.uuid4(), bob),
            )
    with psycopg.connect(db) as conn:
        _as_user(conn, alice)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # an event on Bob's job
            conn.execute("INSERT INTO lorapod.job_events (job_id, seq, type) VALUES (%s, 2, 'log')", (bobs,))
    with psycopg.connect(db) as conn:
        _as_user(conn, None, "anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT id FROM lorapod.training_jobs")
    with psycopg.connect(db) as conn:
        _as_user(conn, None, "anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT id FROM lorapod.web_training_jobs")
    with psycopg.connect(db) as conn:
        _as_user(conn, alice)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the views are read-only
            conn.execute("UPDATE lorapod.web_training_jobs SET name = 'x'")


# --- sync ----------------------------------------------------------------------------------------------

"""Sync with a Supabase project's Postgres, against a real PostgreSQL on 127.0.0.1 with the migration applied.

The migration applies twice and rolls back; row-level security shows users only their own jobs; two ledgers
syncing through one database converge; a sync cut off half-way resumes with no duplicates; a terminal
status never regresses; an unreachable database is a plain message while local work goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from store import sync as sync_module
from store.db import Ledger
from store.errors import SyncSchemaMissing, SyncUnavailable
from store.ingest import ingest
from store.jobs import acquire_lease, get_job, transition, update_job
from store.status import JobStatus
from store.supabase import migration_sql, rollback_sql
from store.sync import sync
from tests.conftest import run_cli
from tests.standins.postgres import PostgresServer, execute_script
from tests.supabase_helpers import (
    TABLES,
    job_events_for,
    make_job,
    pg_rows,
    snapshot_ledger,
    snapshot_remote,
)

ROOT = Path(__file__).resolve().parent.parent
# The web app's own table of datasets, as the seed's schema has it.
WEB_APP_TRAINING_FILES = """
CREATE TABLE public.training_files (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, storage_path text NOT NULL,
    sha256 text NOT NULL UNIQUE, format text NOT NULL, size_bytes bigint NOT NULL DEFAULT 0,
    conversation_count integer NOT NULL DEFAULT 0, total_training_pairs integer NOT NULL DEFAULT 0,
    trainable_pairs integer NOT NULL DEFAULT 0, token_count integer, validation jsonb NOT NULL DEFAULT '{}',
    created_by uuid, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now()
)
"""


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


def test_two_ledgers_syncing_through_one_database_converge(db: str, two_ledgers: tuple[Ledger, Ledger]) -> None:
    a, b = two_ledgers
    first = make_job(a, "a-first")
    make_job(a, "a-retry", parent=first)  # a retry refers to its parent job
    running = make_job(a, "a-running", finish=False)
    make_job(b, "b-first", steps=8)
    make_job(b, "b-live", finish=False)

    report = sync(a, db)
    assert report.table("training_jobs").sent == 3 and report.table("job_events").sent > 0
    sync(b, db)
    sync(a, db)
    remote = snapshot_remote(db)
    assert len(remote["training_jobs"]) == 5
    assert snapshot_ledger(a) == remote == snapshot_ledger(b)

    # Changes on either side keep converging: A's job finishes, B renames one of A's jobs.
    ingest(a, running, job_events_for(running, steps=5, finish=True)[-6:])
    update_job(b, first, stage="renamed elsewhere")
    for ledger in (a, b, a):
        sync(ledger, db)
    assert snapshot_ledger(a) == snapshot_remote(db) == snapshot_ledger(b)
    assert get_job(b, running).status == "completed"
    assert get_job(a, first).stage == "renamed elsewhere"

    # B never supervises A's jobs: a live job pulled from elsewhere is leased to its own ledger, until it ends.
    a_live = make_job(a, "a-live-2", finish=False)
    sync(a, db)
    sync(b, db)
    assert not acquire_lease(b, a_live, "b-supervisor")
    assert acquire_lease(a, a_live, "a-supervisor")
    ingest(a, a_live, job_events_for(a_live, steps=5, finish=True)[-6:])
    sync(a, db)
    sync(b, db)
    assert acquire_lease(b, a_live, "b-supervisor")  # finished: nothing left to supervise, the lease is free


def test_jobs_carry_their_training_files_when_the_web_app_has_that_table(
    postgres: PostgresServer, two_ledgers: tuple[Ledger, Ledger]
) -> None:
    db = postgres.database()
    execute_script(db, WEB_APP_TRAINING_FILES)
    execute_script(db, migration_sql())
    a, b = two_ledgers
    job = make_job(a, "with-a-file")
    sync(a, db)
    sync(b, db)
    dataset = get_job(a, job).training_file_id
    assert pg_rows(db, "SELECT training_file_id FROM lorapod.training_jobs WHERE id = %s", job)[0][0] == dataset
    assert get_job(b, job).training_file_id == dataset
    with b.read() as session:
        assert session.connection().execute(sa.text("SELECT name FROM training_files")).scalars().all() == [
            "with-a-file.json"
        ]


def test_a_sync_repeated_sends_nothing_new_and_changes_nothing(db: str, ledger: Ledger) -> None:
    make_job(ledger, "once")
    sync(ledger, db)
    before = pg_rows(db, "SELECT sum(sync_xid::text::bigint) FROM lorapod.training_jobs")
    again = sync(ledger, db)
    assert again.table("job_events").sent == 0 and again.table("training_metrics_history").sent == 0
    assert sum(t.changed_remote for t in again.tables.values()) == 0
    assert sum(t.changed_local for t in again.tables.values()) == 0
    assert pg_rows(db, "SELECT sum(sync_xid::text::bigint) FROM lorapod.training_jobs") == before


def test_rows_written_late_by_an_offline_ledger_still_reach_the_others(
    db: str, two_ledgers: tuple[Ledger, Ledger]
) -> None:
    a, b = two_ledgers
    offline = make_job(a, "made-offline")  # older updated_at than anything B syncs below
    for index in range(3):
        make_job(b, f"b-{index}")
        sync(b, db)
    sync(a, db)  # A comes back online
    sync(b, db)
    assert get_job(b, offline).status == "completed"
    assert snapshot_ledger(a) == snapshot_ledger(b)


def test_a_terminal_status_never_regresses(db: str, two_ledgers: tuple[Ledger, Ledger]) -> None:
    a, b = two_ledgers
    job = make_job(a, "finishes", finish=False)
    sync(a, db)
    sync(b, db)  # B now holds a stale copy: training
    ingest(a, job, job_events_for(job, steps=5, finish=True)[-6:])
    sync(a, db)  # completed there
    # B changes its stale copy later than A finished: its updated_at is newer, its status must still lose.
    update_job(b, job, stage="stale edit", actual_cost_usd=99.0)
    sync(b, db)
    assert pg_rows(db, "SELECT status, stage, actual_cost_usd FROM lorapod.training_jobs WHERE id = %s", job)[0] == (
        "completed", "completed", 99.0,
    )  # fmt: skip
    assert get_job(b, job).status == "completed"

    # The web app writes a live status over the finished job, with a newer time: the ledger keeps its own,
    # and its next push puts the terminal status back.
    later = datetime.now(UTC) + timedelta(minutes=5)
    execute_script(
        db,
        f"UPDATE lorapod.training_jobs SET status = 'training', updated_at = '{later.isoformat()}' WHERE id = '{job}'",
    )
    sync(a, db, push=False)
    assert get_job(a, job).status == "completed"
    sync(a, db)
    assert pg_rows(db, "SELECT status FROM lorapod.training_jobs WHERE id = %s", job)[0][0] == "completed"

    # Two terminal statuses meet: completed outranks cancelled, on both sides.
    other = make_job(b, "raced", finish=False)
    sync(b, db)
    sync(a, db)
    transition(a, other, JobStatus.CANCELLED)
    ingest(b, other, job_events_for(other, steps=5, finish=True)[-6:])
    for ledger in (a, b, a):
        sync(ledger, db)
    assert get_job(a, other).status == get_job(b, other).status == "completed"


def _big_ledger(ledger: Ledger, jobs: int, steps: int) -> None:
    for index in range(jobs):
        make_job(ledger, f"big-{index}", steps=steps)


def test_a_push_cut_off_half_way_resumes_without_duplicates(
    db: str, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _big_ledger(ledger, jobs=3, steps=400)
    local = snapshot_ledger(ledger)
    original = sync_module._Run._send_events
    calls = {"n": 0}

    def dies_on_the_fourth_batch(self: Any, rows: list[dict[str, Any]]) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("connection cut")
        original(self, rows)

    monkeypatch.setattr(sync_module._Run, "_send_events", dies_on_the_fourth_batch)
    with pytest.raises(RuntimeError, match="connection cut"):
        sync(ledger, db, batch_size=100)
    assert pg_rows(db, "SELECT count(*) FROM lorapod.job_events")[0][0] == 300

    monkeypatch.setattr(sync_module._Run, "_send_events", original)
    resumed = sync(ledger, db, batch_size=100)
    total = sum(len(v) for k, v in local.items() if k == "job_events")
    assert resumed.table("job_events").sent == total - 300  # it went on from the cut, not from the start
    assert resumed.table("training_jobs").sent == 0
    assert snapshot_remote(db) == local
    doubled = "SELECT count(*) FROM (SELECT 1 FROM lorapod.job_events GROUP BY job_id, seq HAVING count(*) > 1) d"
    assert pg_rows(db, doubled)[0][0] == 0


def test_a_pull_cut_off_half_way_resumes_without_duplicates(
    db: str, two_ledgers: tuple[Ledger, Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two_ledgers
    _big_ledger(a, jobs=2, steps=300)
    sync(a, db)
    original = sync_module._Run._apply
    calls = {"n": 0}

    def dies_mid_way(self: Any, name: str, local: Any, rows: list[dict[str, Any]]) -> None:
        original(self, name, local, rows)
        if name == "training_metrics_history":
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("killed")  # after writing, before commit: this batch is rolled back

    monkeypatch.setattr(sync_module._Run, "_apply", dies_mid_way)
    with pytest.raises(RuntimeError, match="killed"):
        sync(b, db, batch_size=100)
    with b.read() as session:
        assert session.connection().execute(sa.text("SELECT count(*) FROM training_metrics_history")).scalar() == 200
    monkeypatch.setattr(sync_module._Run, "_apply", original)
    resumed = sync(b, db, batch_size=100)
    assert resumed.table("training_metrics_history").received == 2 * 300 - 200  # the rest, once
    assert snapshot_ledger(b) == snapshot_ledger(a) == snapshot_remote(db)


def test_a_sync_killed_with_sigkill_resumes_without_duplicates(db: str, ledger: Ledger, lorapod_home: Path) -> None:
    _big_ledger(ledger, jobs=2, steps=1500)
    env = {**os.environ, "SUPABASE_DB_URL": db}
    command = [sys.executable, "-c", "from tui.cli import main; main()", "sync", "--push", "--batch-size", "200"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "job_events" in line and "pushed" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    partial = pg_rows(db, "SELECT count(*) FROM lorapod.job_events")[0][0]
    total = len(snapshot_ledger(ledger)["job_events"])
    assert 0 < partial < total
    result = run_cli("sync", "--push", "--json", env={"SUPABASE_DB_URL": db})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tables"]["job_events"]["sent"] <= total - partial + 200
    assert snapshot_remote(db) == snapshot_ledger(ledger)


def test_an_unreachable_database_is_a_plain_message_and_local_work_goes_on(ledger: Ledger) -> None:
    url = "postgresql://postgres:s3cret-pw@127.0.0.1:9/postgres"  # nothing listens on port 9
    with pytest.raises(SyncUnavailable) as caught:
        sync(ledger, url)
    message = str(caught.value)
    assert "127.0.0.1:9/postgres" in message and "s3cret-pw" not in message
    assert "local work goes on" in message.lower()
    job = make_job(ledger, "still-works")
    assert get_job(ledger, job).status == "completed"

    result = run_cli("sync", env={"SUPABASE_DB_URL": url})
    assert result.exit_code == 1
    assert "cannot reach" in result.output and "s3cret-pw" not in result.output


def test_sync_needs_the_migration_and_a_database_url(postgres: PostgresServer, ledger: Ledger) -> None:
    bare = postgres.database()
    with pytest.raises(SyncSchemaMissing, match="apply the migration"):
        sync(ledger, bare)
    result = run_cli("sync")
    assert result.exit_code == 1 and "SUPABASE_DB_URL" in result.output


def test_sync_command_reports_what_it_did(db: str, ledger: Ledger) -> None:
    make_job(ledger, "cli")
    result = run_cli("sync", "--json", env={"SUPABASE_DB_URL": db})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pushed"] and report["pulled"]
    assert report["tables"]["training_jobs"]["sent"] == 1
    assert db.split("@")[1] in report["remote"]
    text = run_cli("sync", "--pull", env={"SUPABASE_DB_URL": db})
    assert text.exit_code == 0 and "pulled" in text.output
    sql = run_cli("sync", "--print-sql", "migration")
    assert sql.exit_code == 0 and sql.stdout == migration_sql()


# --- the dashboard syncs in the background -------------------------------------------------------------


async def _until(pilot: Any, check: Any, what: str, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if check():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"the dashboard never showed {what}")


def _dashboard() -> Any:
    from store.settings import load_settings
    from tui.app import LorapodApp
    from tui.backend import Backend

    return LorapodApp(Backend(load_settings()))


def _summary(app: Any) -> str:
    from textual.widgets import Static

    return str(app.screen.query_one("#summary", Static).content)


def _table_names(app: Any) -> set[str | None]:
    from tui.widgets.job_table import JobTable

    table = app.screen.query_one(JobTable)
    return {row.name for row in table.rows_by_id.values()}


@pytest.mark.anyio
async def test_the_open_dashboard_pushes_its_jobs_and_shows_jobs_others_pushed(
    db: str, ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", db)
    mine = make_job(ledger, "mine")
    other = Ledger(tmp_path / "colleague.sqlite")
    make_job(other, "theirs")
    sync(other, db)

    app = _dashboard()
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: "theirs" in _table_names(app), "the colleague's job")
        await _until(pilot, lambda: "synced just now" in _summary(app), "that it synced")
        assert {"mine", "theirs"} <= _table_names(app)
    other.close()
    assert (str(mine),) in snapshot_remote(db)["training_jobs"]


@pytest.mark.anyio
async def test_the_dashboard_offline_says_so_once_and_keeps_working(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_DB_URL", "postgresql://postgres:hunter2-secret@127.0.0.1:9/postgres")
    monkeypatch.setenv("LORAPOD_SYNC_INTERVAL_S", "0.5")
    make_job(ledger, "local work")

    app = _dashboard()
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(pilot, lambda: "sync offline" in _summary(app), "the sync going offline")
        await pilot.pause(1.5)  # a few more failed attempts
        assert "local work" in _table_names(app)
        warnings = [n for n in app._notifications if n.title == "Sync"]
        assert len(warnings) == 1
        assert "cannot reach the Supabase database" in warnings[0].message
        assert "hunter2-secret" not in warnings[0].message + _summary(app)

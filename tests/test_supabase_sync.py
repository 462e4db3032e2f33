"""Sync with a Supabase project's Postgres, against a real PostgreSQL on 127.0.0.1 with the migration applied.

Two ledgers syncing through one database converge; a sync cut off half-way resumes with no duplicates; a terminal
status never regresses; an unreachable database is a plain message while local work goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from store import sync as sync_module
from store.db import Ledger
from store.errors import SyncSchemaMissing, SyncUnavailable
from store.ingest import ingest
from store.jobs import acquire_lease, get_job, transition, update_job
from store.status import JobStatus
from store.supabase import migration_sql
from store.sync import sync
from tests.conftest import run_cli
from tests.standins.postgres import PostgresServer, execute_script
from tests.supabase_helpers import (
    WEB_APP_TRAINING_FILES,
    job_events_for,
    make_job,
    pg_rows,
    snapshot_ledger,
    snapshot_remote,
)

ROOT = Path(__file__).resolve().parent.parent


# The web app's own table of datasets, as the seed's schema has it.
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

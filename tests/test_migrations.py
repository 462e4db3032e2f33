"""Schema migrations: an older ledger upgrades in place without losing a row; models match the migrations."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import presets
from store import files, jobs
from store.db import Ledger
from store.events import count_events, record_events
from store.jobs import JobQuery, get_job, list_jobs, transition
from store.metrics import metrics_history
from store.migrations import HEAD_REVISION, head, migrate
from store.models import ModelArtifact, TrainingFile
from store.status import JobStatus
from tests.conftest import FIXTURES

SEED_RUN = uuid.UUID("11111111111141118111111111111111")


def _old_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite"
    shutil.copy(FIXTURES / "ledger-0001.sqlite", path)
    return path


def test_head_revision_constant_matches_the_scripts() -> None:
    assert head() == HEAD_REVISION


def test_the_0001_ledger_upgrades_in_place_keeping_every_row(tmp_path: Path) -> None:
    path = _old_ledger(tmp_path)
    ledger = Ledger(path)
    assert ledger.revision() == HEAD_REVISION

    page = list_jobs(ledger, JobQuery(sort="name", descending=False))
    assert [j.name for j in page.jobs] == ["broken data", "seed run", "still going"]
    seed = get_job(ledger, SEED_RUN)
    assert (seed.status, seed.actual_cost_usd, seed.current_step, seed.hyperparameters["lora_r"]) == (
        "completed", 31.5, 1200, 16,
    )  # fmt: skip
    assert seed.started_at is not None and seed.started_at.tzinfo is not None
    # The data migration read the provider from the resources JSON and the cursor from the events.
    assert seed.provider == "runpod"
    assert get_job(ledger, "33333333").provider == "local"
    assert seed.last_event_seq == 5
    assert seed.spec == {}
    assert count_events(ledger, SEED_RUN) == 5
    assert [m.step for m in metrics_history(ledger, SEED_RUN)] == [10, 20, 30, 40, 50]
    with ledger.read() as session:
        assert session.get(TrainingFile, uuid.UUID("0f0f0f0f0f0f4f0f8f0f0f0f0f0f0f0f")) is not None
        (artifact,) = session.exec(sa.select(ModelArtifact)).scalars().all()  # type: ignore[call-overload]
        assert artifact.perplexity == 4.14

    # The upgraded ledger is fully usable: rules, ingest and new columns.
    assert record_events(ledger, SEED_RUN, [{"seq": 5, "type": "log", "ts": "2026-10-03T09:00:00Z"}]) == 0
    transition(ledger, "33333333", JobStatus.EVALUATING, gpu_type="NVIDIA H100 80GB HBM3")
    ledger.close()

    # Opening again is a no-op.
    again = Ledger(path)
    assert again.revision() == HEAD_REVISION
    assert list_jobs(again).total == 3


def test_models_match_the_migrated_schema(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "new.sqlite")
    with ledger.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_migrations_roll_back_and_forward(tmp_path: Path) -> None:
    ledger = Ledger(_old_ledger(tmp_path))
    migrate(ledger.engine, "0001", down=True)
    assert ledger.revision() == "0001"
    migrate(ledger.engine)
    assert ledger.revision() == HEAD_REVISION
    assert jobs.get_job(ledger, SEED_RUN).provider == "runpod"


def test_0007_lets_a_copy_at_another_path_have_its_own_row_and_rolling_back_merges_them(tmp_path: Path) -> None:
    ledger = Ledger(_old_ledger(tmp_path))
    migrate(ledger.engine, "0006", down=True)
    original = files.register_file(
        ledger, name="a.json", storage_path="/d/a.json", sha256="a" * 64, format="x", size_bytes=1
    )
    migrate(ledger.engine)

    copy = files.register_file(
        ledger, name="b.json", storage_path="/e/b.json", sha256="a" * 64, format="x", size_bytes=1
    )
    assert copy.id != original.id
    job = jobs.create_job(ledger, presets.get("smoke").to_spec("/e/b.json"), training_file_id=copy.id)

    migrate(ledger.engine, "0006", down=True)  # sha256 unique again: the copy folds into the oldest row
    with ledger.read() as session:
        rows = session.exec(sa.select(TrainingFile.id).where(TrainingFile.sha256 == "a" * 64)).all()  # type: ignore[call-overload]
    assert [r[0] for r in rows] == [original.id]
    assert jobs.get_job(ledger, job.id).training_file_id == original.id

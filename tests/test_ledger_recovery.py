"""An emptied or damaged ledger: said so with its path, the file kept aside, the jobs rebuilt from their folders."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import presets
from engine.events import (
    ArtifactEvent,
    CostEvent,
    DatasetEvent,
    ErrorEvent,
    EvalEvent,
    EventWriter,
    MetricsEvent,
    Stage,
    StageEvent,
    read_events,
)
from engine.workdir import Workdir
from remote.supervisor import Supervisor
from store.attempts import accrue, list_attempts, start_attempt
from store.db import Ledger
from store.events import count_events
from store.ingest import ingest
from store.jobs import JobQuery, get_job, job_spec, transition
from store.metrics import metrics_history
from store.settings import load_settings
from store.status import JobStatus
from tests.conftest import run_cli
from tests.dataset_helpers import SAMPLE
from tui.backend import Backend


def _run_events(outcome: str) -> list[Any]:
    """What the engine writes in one run: stages, dataset, metrics and costs, then how the run ended."""
    events: list[Any] = [
        StageEvent(stage=Stage.PREPROCESSING),
        DatasetEvent(
            examples=7,
            train_examples=6,
            eval_examples=1,
            tokens=4000,
            supervised_tokens=1500,
            packed_sequences=3,
            steps_per_epoch=3,
            total_steps=9,
            epochs=3,
        ),
        StageEvent(stage=Stage.MODEL_LOADING),
        StageEvent(stage=Stage.TRAINING),
    ]
    for step in (3, 6):
        events.append(MetricsEvent(step=step, total_steps=9, epoch=step / 3, loss=3.0 - step / 10, elapsed=step))
        events.append(CostEvent(rate_usd_per_hour=1.2, cost_usd=0.01 * step))
    if outcome == "completed":
        events += [
            MetricsEvent(step=9, total_steps=9, epoch=3.0, loss=2.0, elapsed=9),
            StageEvent(stage=Stage.EVALUATING),
            EvalEvent(base_perplexity=9.0, adapter_perplexity=6.5, eval_loss=1.9, tokens=300),
            StageEvent(stage=Stage.PACKAGING),
            ArtifactEvent(kind="adapter", path="/w/packages/adapter.zip", size_bytes=12, sha256="ab" * 32),
            StageEvent(stage=Stage.COMPLETED),
        ]
    elif outcome == "failed":
        events += [
            ErrorEvent(category="out_of_memory", message="CUDA out of memory", hint="lower batch_size to 2"),
            StageEvent(stage=Stage.FAILED),
        ]
    return events


def _launched_job(supervisor: Supervisor, name: str, runs: list[str]) -> uuid.UUID:
    """A job submitted as ``lorapod run`` submits it, its runs written and followed as the local provider and
    the supervisor do; each run but the last was lost mid-training and resumed."""
    ledger, paths = supervisor.ledger, supervisor.settings.paths
    job = supervisor.submit(presets.get("smoke").to_spec(str(SAMPLE), [f"name={name}"])).job
    workdir = Workdir(paths.jobs_dir / str(job.id))
    (workdir.root / "control").mkdir(parents=True)
    (workdir.root / "control" / "spec.json").write_text(job_spec(job).model_dump_json(indent=2), encoding="utf-8")
    for number, outcome in enumerate(runs):
        handle = {"provider": "local", "job_id": str(job.id), "workdir": str(workdir.root), "pid": 4242 + number}
        attempt = start_attempt(ledger, job.id, provider="local", handle=handle, rate_usd_per_hour=1.2, gpu_count=0)
        transition(ledger, job.id, JobStatus.PROVISIONING, workdir=str(workdir.root), pod_id=str(4242 + number))
        workdir.spec.write_text(job_spec(job).model_dump_json(indent=2), encoding="utf-8")
        with EventWriter(workdir.events, str(job.id)) as writer:
            for event in _run_events(outcome):
                writer.emit(event)
        ingest(ledger, job.id, [event for _, event in read_events(workdir.events)])
        if outcome == "lost":  # the engine's process is gone: the supervisor notices
            transition(ledger, job.id, JobStatus.INTERRUPTED)
        accrue(ledger, attempt.id or 0, outcome=get_job(ledger, job.id).status)
    return job.id


def _record(ledger: Ledger, job_id: uuid.UUID) -> dict[str, Any]:
    job = get_job(ledger, job_id)
    return {
        "created": job.created_at,
        "name": job.name,
        "status": job.status,
        "step": (job.current_step, job.total_steps),
        "error": (job.error_category, job.error_message, job.error_hint),
        "adapter": job.lora_artifact_path,
        "events": count_events(ledger, job_id),
        "losses": [m.loss for m in metrics_history(ledger, job_id)],
        "spec": job_spec(job).model_dump(mode="json"),
        "training_file": job.training_file_id is not None,
    }


@pytest.fixture
def three_jobs(lorapod_home: Path) -> dict[str, uuid.UUID]:
    settings = load_settings()
    ledger = Ledger(settings.paths.ledger)
    supervisor = Supervisor(ledger, settings)
    jobs = {
        "done": _launched_job(supervisor, "done", ["completed"]),
        "broke": _launched_job(supervisor, "broke", ["failed"]),
        "resumed": _launched_job(supervisor, "resumed", ["lost", "completed"]),
    }
    ledger.close()
    return jobs


def test_an_emptied_ledger_is_kept_aside_and_its_jobs_rebuilt_from_their_folders(
    lorapod_home: Path, three_jobs: dict[str, uuid.UUID]
) -> None:
    path = lorapod_home / "ledger.sqlite"
    before = Ledger(path)
    recorded = {name: _record(before, job_id) for name, job_id in three_jobs.items()}
    before.close()
    assert {name: r["status"] for name, r in recorded.items()} == {
        "done": "completed", "broke": "failed", "resumed": "completed",
    }  # fmt: skip
    path.write_bytes(b"")

    listed = run_cli("jobs", "--json")
    assert listed.exit_code == 0, listed.output
    assert f"the ledger {path} was empty (0 bytes)" in listed.stderr
    (kept,) = lorapod_home.glob("ledger.sqlite.empty-*")
    assert kept.stat().st_size == 0 and kept.name in listed.stderr
    assert "rebuilt 3 jobs" in listed.stderr
    jobs = {j["name"]: j for j in json.loads(listed.stdout)["jobs"]}
    assert {name: j["status"] for name, j in jobs.items()} == {name: r["status"] for name, r in recorded.items()}

    after = Ledger(path)
    for name, job_id in three_jobs.items():
        rebuilt, original = _record(after, job_id), recorded[name]
        # Created when its spec was written at launch, a moment after it was submitted.
        assert abs(rebuilt.pop("created") - original.pop("created")) < timedelta(seconds=5)
        assert rebuilt == original, name
    assert [a.outcome for a in list_attempts(after, three_jobs["resumed"])] == ["interrupted", "completed"]
    assert get_job(after, three_jobs["done"]).actual_cost_usd == pytest.approx(0.06)
    assert get_job(after, three_jobs["resumed"]).actual_cost_usd == pytest.approx(0.12)
    after.close()

    again = run_cli("jobs", "--json")
    assert again.stderr == ""  # rebuilt once; the new ledger is a ledger like any other


def test_the_dashboard_shows_the_rebuild_as_an_alert(lorapod_home: Path, three_jobs: dict[str, uuid.UUID]) -> None:
    path = lorapod_home / "ledger.sqlite"
    path.write_bytes(b"")
    backend = Backend(load_settings())
    alerts = backend.take_alerts()
    assert len(alerts) == 1 and str(path) in alerts[0].message and "3 jobs" in alerts[0].message
    listed = backend.jobs(JobQuery(group="all", limit=50)).jobs
    assert {j.id for j in listed} == set(three_jobs.values())


def test_a_job_whose_engine_is_gone_comes_back_interrupted(lorapod_home: Path) -> None:
    settings = load_settings()
    ledger = Ledger(settings.paths.ledger)
    job_id = _launched_job(Supervisor(ledger, settings), "lost", ["lost"])
    ledger.close()
    (lorapod_home / "ledger.sqlite").write_bytes(b"")
    listed = run_cli("jobs", "--json")
    (job,) = json.loads(listed.stdout)["jobs"]
    assert (job["id"], job["status"], job["current_step"]) == (str(job_id), "interrupted", 6)


def test_a_ledger_that_is_not_sqlite_is_refused_with_its_path_then_rebuilt_once_moved_aside(
    lorapod_home: Path, three_jobs: dict[str, uuid.UUID]
) -> None:
    path = lorapod_home / "ledger.sqlite"
    garbage = b"this is not a database\n" * 300
    path.write_bytes(garbage)
    refused = run_cli("jobs")
    assert refused.exit_code == 1
    assert f"the ledger {path} is not an SQLite database" in refused.output and "move it aside" in refused.output
    assert "Traceback" not in refused.output
    assert path.read_bytes() == garbage  # left as it was: it may still hold what a backup lacks

    path.rename(lorapod_home / "ledger.sqlite.damaged")
    listed = run_cli("jobs", "--json")
    assert f"there was no ledger at {path}" in listed.stderr and "rebuilt 3 jobs" in listed.stderr
    assert {j["id"] for j in json.loads(listed.stdout)["jobs"]} == {str(i) for i in three_jobs.values()}

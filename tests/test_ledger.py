"""The job ledger: create, find by prefix, list with filters / sort / paging, and the status machine."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

import presets
from engine.config import JobSpec
from store import jobs
from store.db import Ledger
from store.errors import AmbiguousJobId, IllegalTransition, JobNotFound
from store.jobs import JobQuery, create_job, get_job, job_spec, list_jobs, short_id, transition, update_job
from store.models import TrainingFile
from store.status import PIPELINE, TERMINAL, JobStatus, allowed_next


def _spec(name: str = "balanced", **overrides: str) -> JobSpec:
    return presets.get(name).to_spec("data.json", [f"{k}={v}" for k, v in overrides.items()])


def test_a_created_job_is_queued_with_its_whole_spec(ledger: Ledger) -> None:
    job = create_job(ledger, _spec(lora_r="8"), name="first run", estimated_cost_usd=12.5)
    stored = get_job(ledger, job.id)
    assert stored.status == "queued"
    assert stored.name == "first run"
    assert stored.hyperparameters["lora_r"] == 8
    assert stored.resources["provider"] == "local"
    assert stored.spec["dataset"]["dataset_path"] == "data.json"
    assert "hyperparameters" not in stored.spec  # kept once, in its own column
    spec = job_spec(stored)
    assert (spec.job_id, spec.name, spec.hyperparameters.lora_r) == (str(job.id), "first run", 8)
    assert spec.training_hash() == _spec(lora_r="8").training_hash()
    assert stored.created_at.tzinfo is not None


def test_jobs_are_found_by_any_unique_prefix(ledger: Ledger) -> None:
    a = create_job(ledger, _spec(job_id="aaaa1111-0000-4000-8000-000000000001"))
    create_job(ledger, _spec(job_id="aaaa2222-0000-4000-8000-000000000002"))
    assert get_job(ledger, "aaaa1").id == a.id
    assert get_job(ledger, "AAAA-1111").id == a.id
    assert get_job(ledger, str(a.id)).id == a.id
    assert short_id(a.id) == "aaaa1111"
    with pytest.raises(AmbiguousJobId, match="several jobs"):
        get_job(ledger, "aaaa")
    with pytest.raises(JobNotFound, match="no job id starts with"):
        get_job(ledger, "bbbb")
    with pytest.raises(JobNotFound, match="not a job id"):
        get_job(ledger, "zz; drop table")


def test_retries_link_to_their_parent_and_count(ledger: Ledger) -> None:
    parent = create_job(ledger, _spec())
    child = create_job(ledger, _spec(), parent_job_id=parent.id)
    grandchild = create_job(ledger, _spec(), parent_job_id=child.id)
    assert (child.parent_job_id, child.retry_count, grandchild.retry_count) == (parent.id, 1, 2)
    with pytest.raises(JobNotFound):
        create_job(ledger, _spec(), parent_job_id=uuid.uuid4())


def _populate(ledger: Ledger) -> dict[str, uuid.UUID]:
    now = datetime.now(UTC)
    ids = {}
    plan = [
        ("alpha", "balanced", [JobStatus.PROVISIONING, JobStatus.TRAINING], 3.0),
        ("bravo", "aggressive", [JobStatus.PROVISIONING, JobStatus.TRAINING, JobStatus.COMPLETED], 9.0),
        ("charlie", "smoke", [JobStatus.FAILED], 0.0),
        ("delta", "conservative", [JobStatus.CANCELLED], 1.0),
        ("echo", "balanced", [], 0.0),
    ]
    for i, (name, preset, path, cost) in enumerate(plan):
        job = create_job(ledger, _spec(preset), name=name)
        for status in path:
            transition(ledger, job.id, status)
        update_job(ledger, job.id, actual_cost_usd=cost, current_step=i, total_steps=10)
        with ledger.write() as session:
            row = session.get(type(job), job.id)
            assert row is not None
            row.created_at = now - timedelta(days=10 - i)
        ids[name] = job.id
    return ids


def _names(page: jobs.JobPage) -> list[str | None]:
    return [j.name for j in page.jobs]


def test_listing_filters_by_status_group(ledger: Ledger) -> None:
    _populate(ledger)
    assert _names(list_jobs(ledger)) == ["echo", "delta", "charlie", "bravo", "alpha"]  # newest first
    assert set(_names(list_jobs(ledger, JobQuery(group="active")))) == {"alpha", "echo"}
    assert _names(list_jobs(ledger, JobQuery(group="completed"))) == ["bravo"]
    assert _names(list_jobs(ledger, JobQuery(group="failed"))) == ["charlie"]
    assert _names(list_jobs(ledger, JobQuery(group="cancelled"))) == ["delta"]
    assert _names(list_jobs(ledger, JobQuery(statuses=frozenset({"training"})))) == ["alpha"]


def test_listing_sorts_searches_and_pages(ledger: Ledger) -> None:
    ids = _populate(ledger)
    assert _names(list_jobs(ledger, JobQuery(sort="cost")))[:2] == ["bravo", "alpha"]
    assert _names(list_jobs(ledger, JobQuery(sort="name", descending=False))) == [
        "alpha", "bravo", "charlie", "delta", "echo",
    ]  # fmt: skip
    assert _names(list_jobs(ledger, JobQuery(sort="progress")))[0] == "echo"
    assert _names(list_jobs(ledger, JobQuery(search="smoke"))) == ["charlie"]
    assert _names(list_jobs(ledger, JobQuery(search="CHAR"))) == ["charlie"]
    assert _names(list_jobs(ledger, JobQuery(search=short_id(ids["delta"])[:6]))) == ["delta"]
    page = list_jobs(ledger, JobQuery(limit=2, offset=2))
    assert _names(page) == ["charlie", "bravo"] and page.total == 5
    since = datetime.now(UTC) - timedelta(days=8.5)
    assert _names(list_jobs(ledger, JobQuery(created_from=since))) == ["echo", "delta", "charlie"]


def test_listing_by_training_file_and_model(ledger: Ledger) -> None:
    with ledger.write() as session:
        tf = TrainingFile(name="b.json", storage_path="/d/b.json", sha256="ab" * 32, format="brightrun-lora-v4")
        session.add(tf)
    job = create_job(ledger, _spec("smoke"), training_file_id=tf.id)
    create_job(ledger, _spec())
    assert [j.id for j in list_jobs(ledger, JobQuery(training_file_id=tf.id)).jobs] == [job.id]
    assert list_jobs(ledger, JobQuery(base_model="demo:tiny-llama")).total == 1
    assert list_jobs(ledger, JobQuery(sort="training_file")).total == 2


def test_bad_queries_are_refused() -> None:
    with pytest.raises(ValueError, match="status filter"):
        JobQuery(group="running-ish")
    with pytest.raises(ValueError, match="cannot sort"):
        JobQuery(sort="id; drop")


# --- the status machine -------------------------------------------------------------------------------


def test_a_job_walks_the_whole_pipeline(ledger: Ledger) -> None:
    job = create_job(ledger, _spec())
    for status in PIPELINE[1:]:
        job = transition(ledger, job.id, status, stage=str(status))
    assert job.status == "completed"
    assert job.started_at is not None and job.completed_at is not None
    assert job.completed_at >= job.started_at


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_a_terminal_job_never_changes_again(ledger: Ledger, terminal: JobStatus) -> None:
    job = create_job(ledger, _spec())
    if terminal is JobStatus.COMPLETED:
        transition(ledger, job.id, JobStatus.TRAINING)
    transition(ledger, job.id, terminal)
    for status in JobStatus:
        if status is terminal:
            continue
        with pytest.raises(IllegalTransition, match="never changes status"):
            transition(ledger, job.id, status)
    assert get_job(ledger, job.id).status == terminal


def test_illegal_transitions_are_refused_and_change_nothing(ledger: Ledger) -> None:
    job = create_job(ledger, _spec())
    with pytest.raises(IllegalTransition, match="cannot go from queued to completed"):
        transition(ledger, job.id, JobStatus.COMPLETED)
    transition(ledger, job.id, JobStatus.TRAINING, current_step=5)
    with pytest.raises(IllegalTransition, match="cannot go from training to preprocessing"):
        transition(ledger, job.id, JobStatus.PREPROCESSING, current_step=99)
    stored = get_job(ledger, job.id)
    assert (stored.status, stored.current_step) == ("training", 5)


def test_an_interrupted_job_resumes_through_provisioning(ledger: Ledger) -> None:
    job = create_job(ledger, _spec())
    transition(ledger, job.id, JobStatus.TRAINING)
    transition(ledger, job.id, JobStatus.INTERRUPTED)
    with pytest.raises(IllegalTransition):
        transition(ledger, job.id, JobStatus.TRAINING)
    for status in (JobStatus.PROVISIONING, JobStatus.MODEL_LOADING, JobStatus.TRAINING, JobStatus.COMPLETED):
        transition(ledger, job.id, status)


def test_queued_jobs_cannot_be_interrupted_but_can_be_cancelled() -> None:
    assert JobStatus.INTERRUPTED not in allowed_next(JobStatus.QUEUED)
    assert JobStatus.CANCELLED in allowed_next(JobStatus.QUEUED)
    assert allowed_next(JobStatus.COMPLETED) == frozenset()


def test_unknown_fields_cannot_be_set_through_a_transition(ledger: Ledger) -> None:
    job = create_job(ledger, _spec())
    with pytest.raises(ValueError, match="not updatable"):
        transition(ledger, job.id, JobStatus.PROVISIONING, base_model="other")

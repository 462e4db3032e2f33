"""Training files register once per content; artifacts record once per (job, type, path)."""

from __future__ import annotations

import pytest

import presets
from store.artifacts import list_artifacts, record_artifact
from store.db import Ledger
from store.files import list_files, register_file
from store.jobs import JobQuery, create_job, list_jobs


def test_registering_the_same_content_twice_updates_one_row(ledger: Ledger) -> None:
    first = register_file(
        ledger, name="a.json", storage_path="/d/a.json", sha256="1" * 64, format="brightrun-lora-v4", size_bytes=10
    )
    again = register_file(
        ledger, name="a-copy.json", storage_path="/e/a.json", sha256="1" * 64, format="brightrun-lora-v4",
        size_bytes=10, trainable_pairs=62, validation={"ok": True},
    )  # fmt: skip
    assert again.id == first.id
    (row,) = list_files(ledger)
    assert (row.name, row.storage_path, row.trainable_pairs, row.validation) == (
        "a-copy.json",
        "/e/a.json",
        62,
        {"ok": True},
    )


def test_jobs_show_their_training_file_name(ledger: Ledger) -> None:
    tf = register_file(ledger, name="seed.json", storage_path="/d/seed.json", sha256="2" * 64, format="x", size_bytes=1)
    create_job(ledger, presets.get("smoke").to_spec("/d/seed.json"), training_file_id=tf.id)
    (row,) = list_jobs(ledger, JobQuery()).jobs
    assert row.training_file_name == "seed.json"


def test_artifacts_are_recorded_once_per_job_type_and_path(ledger: Ledger) -> None:
    job = create_job(ledger, presets.get("smoke").to_spec("d.json"))
    record_artifact(
        ledger, job.id, artifact_type="adapter", storage_path="jobs/x/adapter.zip", size_bytes=5, sha256="a"
    )
    record_artifact(
        ledger, job.id, artifact_type="adapter", storage_path="jobs/x/adapter.zip", size_bytes=6, sha256="b"
    )
    record_artifact(ledger, job.id, artifact_type="deploy", storage_path="jobs/x/deploy.zip", size_bytes=9, sha256="c")
    assert [(a.artifact_type, a.size_bytes) for a in list_artifacts(ledger, job.id)] == [("adapter", 6), ("deploy", 9)]
    assert len(list_artifacts(ledger, job.id, "deploy")) == 1
    with pytest.raises(ValueError, match="artifact type"):
        record_artifact(ledger, job.id, artifact_type="weights", storage_path="p", size_bytes=1, sha256=None)

"""Training files register once per path and content; artifacts record once per (job, type, path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import presets
from engine.checksums import sha256_file
from store.artifacts import list_artifacts, record_artifact
from store.db import Ledger
from store.files import FileState, checked_files, list_files, register_file, register_validated
from store.jobs import JobQuery, create_job, list_jobs


def test_registering_the_same_file_twice_updates_one_row(ledger: Ledger) -> None:
    first = register_file(
        ledger, name="a.json", storage_path="/d/a.json", sha256="1" * 64, format="brightrun-lora-v4", size_bytes=10
    )
    again = register_file(
        ledger, name="a.json", storage_path="/d/a.json", sha256="1" * 64, format="brightrun-lora-v4",
        size_bytes=10, trainable_pairs=62, validation={"ok": True},
    )  # fmt: skip
    assert again.id == first.id
    (row,) = list_files(ledger)
    assert (row.trainable_pairs, row.validation) == (62, {"ok": True})


def test_a_copy_at_another_path_keeps_earlier_jobs_training_file(ledger: Ledger, tmp_path: Path) -> None:
    original, copy = tmp_path / "sample.json", tmp_path / "elsewhere" / "my-copy.json"
    original.write_text('{"conversations": []}')
    copy.parent.mkdir()
    shutil.copy(original, copy)
    report = {"format": "brightrun-lora-v4", "ok": True}
    first = register_validated(ledger, original, sha256=sha256_file(original), size_bytes=22, report=report)
    create_job(ledger, presets.get("smoke").to_spec(str(original)), training_file_id=first.id, name="earlier")

    second = register_validated(ledger, copy, sha256=sha256_file(copy), size_bytes=22, report=report)

    assert second.id != first.id
    (earlier,) = list_jobs(ledger, JobQuery()).jobs
    assert earlier.training_file_name == "sample.json"
    assert {(f.name, f.storage_path) for f in list_files(ledger)} == {
        ("sample.json", str(original.resolve())),
        ("my-copy.json", str(copy.resolve())),
    }


def test_a_registered_file_whose_contents_changed_is_flagged(ledger: Ledger, tmp_path: Path) -> None:
    kept, edited, same_size, gone = (tmp_path / f"{n}.json" for n in ("kept", "edited", "same-size", "gone"))
    for path in (kept, edited, same_size, gone):
        path.write_text('{"a": 1}')
        register_validated(ledger, path, sha256=sha256_file(path), size_bytes=8, report={"format": "x"})
    edited.write_text('{"a": 1, "b": 2}')
    same_size.write_text('{"a": 2}')  # the same size, other bytes: only the checksum tells
    gone.unlink()

    states = {row.name: state for row, state in checked_files(ledger)}

    assert states == {
        "kept.json": FileState.UNCHANGED,
        "edited.json": FileState.CHANGED,
        "same-size.json": FileState.CHANGED,
        "gone.json": FileState.MISSING,
    }


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


def test_dataset_list_flags_a_file_changed_since_registered(lorapod_home: Path, tmp_path: Path) -> None:
    from store.settings import load_settings
    from tests.conftest import run_cli

    ledger = Ledger(load_settings().paths.ledger)
    kept, edited = tmp_path / "kept.json", tmp_path / "edited.json"
    for path in (kept, edited):
        path.write_text('{"a": 1}')
        register_validated(ledger, path, sha256=sha256_file(path), size_bytes=8, report={"format": "x"})
    edited.write_text('{"a": 1, "b": 2}')
    ledger.close()

    listed = json.loads(run_cli("dataset", "list", "--json").stdout)
    assert {f["name"]: f["contents"] for f in listed} == {"kept.json": "unchanged", "edited.json": "changed"}
    table = run_cli("dataset", "list")
    assert table.exit_code == 0
    assert "⚠ changed" in table.stdout and "✔ unchanged" in table.stdout
    assert "1 file changed or missing since registered" in table.stderr

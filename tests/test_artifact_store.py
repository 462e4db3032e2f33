"""Artifact stores: the local folder and Supabase Storage (against a local stand-in of its REST and TUS API).

A 300 MB upload cut at 40% resumes and verifies, in bounded memory; a download whose checksum is wrong is
refused; small uploads send x-upsert "true" and a content type; the engine's uploading stage stores its
packages and says where; no secret reaches a log, an event or a message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tracemalloc
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import presets
from engine.artifacts import (
    ArtifactStoreError,
    ChecksumMismatch,
    LocalStore,
    is_store_uri,
    object_key,
    storage_path,
    store_from_env,
)
from engine.checksums import sha256_file
from engine.events import read_events
from engine.failures import classify
from engine.packaging import Package
from engine.runner import Job
from engine.supabase_storage import SupabaseStore
from engine.tus import TusError
from engine.workdir import Workdir
from remote.supervisor import Supervisor
from store.artifacts import list_artifacts
from store.db import Ledger
from store.ingest import ingest
from store.jobs import create_job, get_job, transition
from store.settings import load_settings
from store.status import JobStatus
from tests.conftest import run_cli
from tests.standins.supabase_storage import StorageStandIn

MB = 1024 * 1024
BUCKET = "model-artifacts"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[StorageStandIn]:
    stand_in = StorageStandIn(tmp_path / "storage-server").start()
    yield stand_in
    stand_in.stop()


def _store(storage: StorageStandIn, tmp_path: Path, **options: object) -> SupabaseStore:
    return SupabaseStore(storage.url, storage.key, bucket=BUCKET, state_dir=tmp_path / "upload-state", **options)  # type: ignore[arg-type]


def _file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that does not repeat, written a megabyte at a time."""
    seed = hashlib.sha256(path.name.encode()).digest()
    with path.open("wb") as out:
        written = 0
        while written < size:
            block = hashlib.sha256(seed + written.to_bytes(8, "big")).digest() * (MB // 32)
            out.write(block[: size - written])
            written += len(block)
    return path


def _package(folder: Path, name: str) -> Path:
    """A small zip with a manifest, as the engine's packages are."""
    folder.mkdir(parents=True, exist_ok=True)
    content = os.urandom(2048)
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("adapter/weights.bin", content)
        manifest = {"files": {"adapter/weights.bin": hashlib.sha256(content).hexdigest()}}
        archive.writestr("manifest.json", json.dumps(manifest))
    return path


# --- Supabase Storage ----------------------------------------------------------------------------------


def test_a_300_mb_upload_cut_at_40_percent_resumes_and_verifies(
    storage: StorageStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = _file(tmp_path / "lorapod-full.zip", 300 * MB)
    digest = sha256_file(big)
    storage.cut_at = int(big.stat().st_size * 0.4)
    store = _store(storage, tmp_path)
    job = str(uuid.uuid4())

    caplog.set_level(logging.INFO)
    tracemalloc.start()
    try:
        stored = store.upload(big, job, sha256=digest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert storage.stats.cuts == 1  # the connection was dropped at 40%…
    assert storage.stats.creates == 1  # …and the same upload went on, from where the server stood:
    assert storage.stats.bytes_received == big.stat().st_size  # no byte sent twice
    assert "resuming" in caplog.text
    assert peak < 16 * MB  # streamed a megabyte at a time: never a chunk, let alone the file, in memory
    assert stored.uri == f"supabase://{BUCKET}/{object_key(job, big.name)}" and stored.sha256 == digest
    assert sha256_file(storage.path(BUCKET, object_key(job, big.name))) == digest
    assert store.recorded_sha256(stored.uri) == digest

    target = store.download(stored.uri, tmp_path / "out")  # verified against the recorded sha256
    assert target.stat().st_size == big.stat().st_size and sha256_file(target) == digest
    assert (
        not (tmp_path / "upload-state" / "uploads.json").exists()
        or json.loads((tmp_path / "upload-state" / "uploads.json").read_text()) == {}
    )


def test_an_upload_that_keeps_failing_resumes_in_a_later_process(storage: StorageStandIn, tmp_path: Path) -> None:
    big = _file(tmp_path / "lorapod-deploy.zip", 20 * MB)
    storage.cut_at = 9 * MB
    job = str(uuid.uuid4())
    first = _store(storage, tmp_path, max_attempts=1)
    with pytest.raises(TusError, match="run it again to resume"):
        first.upload(big, job)
    state = json.loads((tmp_path / "upload-state" / "uploads.json").read_text())
    assert len(state) == 1 and storage.url not in json.dumps(state)  # upload ids only, no URL

    again = _store(storage, tmp_path)  # a new process: the engine restarted on the same workdir
    stored = again.upload(big, job)
    assert storage.stats.creates == 1 and storage.stats.bytes_received == big.stat().st_size
    assert sha256_file(storage.path(BUCKET, object_key(job, big.name))) == sha256_file(big) == stored.sha256


def test_a_download_with_a_wrong_checksum_is_refused(storage: StorageStandIn, tmp_path: Path) -> None:
    store = _store(storage, tmp_path)
    job = str(uuid.uuid4())
    small = store.upload(_package(tmp_path / "pkg", "lorapod-adapter.zip"), job)
    large = store.upload(_file(tmp_path / "lorapod-full.zip", 13 * MB), job)
    for stored in (small, large):
        storage.tamper(BUCKET, storage_path(stored.uri).split("/", 1)[1])
        out = tmp_path / f"out-{stored.size_bytes}"
        with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
            store.download(stored.uri, out, sha256=stored.sha256)
        assert list(out.iterdir()) == []  # nothing half-written is left behind
    with pytest.raises(ChecksumMismatch):
        store.upload(tmp_path / "pkg" / "lorapod-adapter.zip", job, sha256="0" * 64)


def test_small_uploads_go_through_supabase_py_with_upsert_and_a_content_type(
    storage: StorageStandIn, tmp_path: Path
) -> None:
    store = _store(storage, tmp_path)
    job = str(uuid.uuid4())
    package = _package(tmp_path / "pkg", "lorapod-adapter.zip")
    stored = store.upload(package, job)
    again = store.upload(package, job)  # upsert: the same object is replaced, not refused
    assert again.uri == stored.uri
    assert storage.stats.creates == 0  # no TUS for a small file
    first = storage.stats.uploads[0]
    assert first["method"] == "POST" and first["x-upsert"] == "true"
    assert first["file-content-type"] == "application/zip"
    assert json.loads(first["form"]["metadata"]) == {"sha256": sha256_file(package)}
    assert len(storage.stats.uploads) == 2


def test_a_signed_url_fetches_the_package_without_credentials(storage: StorageStandIn, tmp_path: Path) -> None:
    store = _store(storage, tmp_path)
    package = _package(tmp_path / "pkg", "lorapod-adapter.zip")
    stored = store.upload(package, str(uuid.uuid4()))
    url = store.signed_url(stored.uri, expires_in=600)
    assert storage.key not in url
    assert httpx.get(url).content == package.read_bytes()
    assert store.storage_path(stored.uri).startswith(f"{BUCKET}/jobs/")


def test_storage_errors_are_plain_messages_without_credentials(storage: StorageStandIn, tmp_path: Path) -> None:
    wrong = SupabaseStore(storage.url, "not-the-key", bucket=BUCKET)
    with pytest.raises(ArtifactStoreError) as refused:
        wrong.upload(_package(tmp_path / "pkg", "lorapod-adapter.zip"), str(uuid.uuid4()))
    gone = SupabaseStore("http://127.0.0.1:9", storage.key, bucket=BUCKET)  # nothing listens there
    with pytest.raises(ArtifactStoreError) as unreachable:
        gone.download(f"supabase://{BUCKET}/jobs/{uuid.uuid4()}/a.zip", tmp_path / "o", sha256="0" * 64)
    for message in (str(refused.value), str(unreachable.value)):
        assert storage.key not in message and "127.0.0.1" not in message
    assert "invalid signature" in str(refused.value) and "unreachable" in str(unreachable.value)


def test_no_secret_reaches_a_log_an_event_or_a_workdir(
    storage: StorageStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the HTTP libraries' included
    monkeypatch.setenv("LORAPOD_ARTIFACT_STORE", "supabase")
    monkeypatch.setenv("SUPABASE_URL", storage.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", storage.key)
    storage.cut_at = 7 * MB
    job, workdir = _engine_job(tmp_path)
    packages = [
        _as_package("adapter", _package(workdir.packages, "lorapod-adapter.zip")),
        _as_package("full", _file(workdir.packages / "lorapod-full.zip", 14 * MB)),
    ]
    job.upload(packages)
    job.writer.close()
    store = store_from_env()
    assert store is not None
    uri = next(e["uri"] for _, e in read_events(workdir.events) if e.get("uri"))
    store.download(uri, tmp_path / "out")
    store.signed_url(uri)

    secrets = (storage.key, storage.url, storage.url.split("://", 1)[1])
    assert storage.stats.cuts == 1 and "HTTP Request" in caplog.text  # the HTTP libraries did log
    for secret in secrets:
        assert secret not in caplog.text
    for path in workdir.root.rglob("*"):
        if path.is_file() and path.suffix != ".zip":
            text = path.read_text(encoding="utf-8", errors="replace")
            assert not any(secret in text for secret in secrets), path


# --- the local folder ----------------------------------------------------------------------------------


def test_the_local_store_keeps_files_by_job_with_their_checksum(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    job = str(uuid.uuid4())
    package = _package(tmp_path / "pkg", "lorapod-adapter.zip")
    stored = store.upload(package, job, sha256=sha256_file(package))
    kept = tmp_path / "artifacts" / "jobs" / job / "lorapod-adapter.zip"
    assert stored.uri == kept.as_uri() and is_store_uri(stored.uri)
    assert kept.read_bytes() == package.read_bytes()
    assert store.recorded_sha256(stored.uri) == sha256_file(package) == stored.sha256
    assert store.storage_path(stored.uri) == str(kept)
    assert store.upload(package, job) == stored  # again: already there, unchanged

    out = store.download(stored.uri, tmp_path / "out")
    assert out.read_bytes() == package.read_bytes()
    kept.write_bytes(b"tampered" + kept.read_bytes()[8:])
    with pytest.raises(ChecksumMismatch):
        store.download(stored.uri, tmp_path / "out2")
    assert not (tmp_path / "out2" / "lorapod-adapter.zip").exists()
    with pytest.raises(ChecksumMismatch):
        store.upload(package, str(uuid.uuid4()), sha256="f" * 64)


def test_the_store_comes_from_the_environment(tmp_path: Path) -> None:
    assert store_from_env({}) is None
    local = store_from_env({"LORAPOD_ARTIFACT_STORE": "local", "LORAPOD_ARTIFACT_DIR": str(tmp_path)})
    assert isinstance(local, LocalStore) and local.root == tmp_path
    with pytest.raises(ArtifactStoreError, match="SUPABASE_SERVICE_ROLE_KEY") as missing:
        store_from_env({"LORAPOD_ARTIFACT_STORE": "supabase", "SUPABASE_URL": "https://secret-ref.supabase.co"})
    assert "secret-ref" not in str(missing.value)
    with pytest.raises(ArtifactStoreError, match="local or supabase"):
        store_from_env({"LORAPOD_ARTIFACT_STORE": "s3"})
    with pytest.raises(ArtifactStoreError, match="not a job id"):
        object_key("../etc", "a.zip")


# --- the engine's uploading stage, and downloads through the ledger ------------------------------------


def _engine_job(tmp_path: Path) -> tuple[Job, Workdir]:
    spec = presets.get("smoke").to_spec("d.json").model_copy(update={"job_id": str(uuid.uuid4())})
    workdir = Workdir(tmp_path / "workdir")
    workdir.root.mkdir(parents=True)
    return Job(spec, workdir, tmp_path / "models"), workdir


def _as_package(kind: str, path: Path) -> Package:
    return Package(kind=kind, path=path, size_bytes=path.stat().st_size, sha256=sha256_file(path))


def test_the_uploading_stage_stores_the_packages_and_emits_their_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ledger: Ledger, lorapod_home: Path
) -> None:
    artifacts = lorapod_home / "artifacts"
    monkeypatch.setenv("LORAPOD_ARTIFACT_STORE", "local")
    monkeypatch.setenv("LORAPOD_ARTIFACT_DIR", str(artifacts))
    engine_job, workdir = _engine_job(tmp_path)
    packages = [
        _as_package(kind, _package(workdir.packages, f"lorapod-{kind}.zip")) for kind in ("adapter", "full", "deploy")
    ]
    engine_job.upload(packages)
    engine_job.writer.close()

    events = [e for _, e in read_events(workdir.events) if e["type"] == "artifact"]
    job_id = engine_job.spec.job_id
    assert [e["kind"] for e in events] == ["adapter", "full", "deploy"]
    for event, package in zip(events, packages, strict=True):
        kept = artifacts / "jobs" / str(job_id) / package.path.name
        assert event["uri"] == kept.as_uri() and event["path"] == str(package.path)
        assert event["sha256"] == package.sha256 and kept.read_bytes() == package.path.read_bytes()

    # The ledger records the store's URI as the storage path, and downloads come from the store.
    row = create_job(ledger, engine_job.spec)
    transition(ledger, row.id, JobStatus.PROVISIONING)
    built = [{**e, "uri": None, "seq": e["seq"]} for e in events]  # as packaging announced them first
    for seq, event in enumerate([*built, *events], start=1):
        ingest(ledger, row.id, [{**event, "seq": seq}])
    stored = list_artifacts(ledger, row.id)
    assert sorted(a.storage_path for a in stored) == sorted(e["uri"] for e in events)  # one row per package
    assert get_job(ledger, row.id).lora_artifact_path == events[0]["uri"]
    target = Supervisor(ledger, load_settings()).download(row.id, "full", tmp_path / "downloaded")
    assert target.read_bytes() == packages[1].path.read_bytes()

    result = run_cli("download", row.id.hex[:8], "--path")
    assert result.exit_code == 0
    assert result.stdout.strip() == str(artifacts / "jobs" / str(job_id) / "lorapod-adapter.zip")
    link = run_cli("download", row.id.hex[:8], "--package", "full", "--url")
    assert link.exit_code == 0 and link.stdout.strip().startswith("file://")  # a local file's link is its path


def test_without_a_store_the_packages_stay_in_the_workdir(tmp_path: Path) -> None:
    engine_job, workdir = _engine_job(tmp_path)
    engine_job.upload([_as_package("adapter", _package(workdir.packages, "lorapod-adapter.zip"))])
    engine_job.writer.close()
    events = [e for _, e in read_events(workdir.events)]
    assert [e["type"] for e in events] == ["log"] and "no artifact store" in events[0]["message"]


def test_an_upload_that_fails_is_an_upload_failure_and_the_packages_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LORAPOD_ARTIFACT_STORE", "supabase")
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "a-key-that-says-401-unauthorized")
    engine_job, workdir = _engine_job(tmp_path)
    package = _package(workdir.packages, "lorapod-adapter.zip")
    with pytest.raises(ArtifactStoreError) as caught:
        engine_job.upload([_as_package("adapter", package)])
    engine_job.writer.close()
    failure = classify(caught.value, engine_job.spec)
    assert failure.category == "upload" and "safe in the workdir" in failure.hint
    assert package.is_file()
    assert "a-key-that" not in failure.message


def test_download_url_and_path_of_a_package_in_supabase_storage(
    storage: StorageStandIn, tmp_path: Path, ledger: Ledger
) -> None:
    spec = presets.get("smoke").to_spec("d.json")
    row = create_job(ledger, spec)
    transition(ledger, row.id, JobStatus.PROVISIONING)
    package = _package(tmp_path / "pkg", f"lorapod-{row.id.hex[:8]}-adapter.zip")
    stored = _store(storage, tmp_path).upload(package, str(row.id))
    event = {"type": "artifact", "kind": "adapter", "path": str(package), "size_bytes": stored.size_bytes}
    ingest(ledger, row.id, [{"seq": 1, **event, "sha256": stored.sha256, "uri": stored.uri}])
    env = {"SUPABASE_URL": storage.url, "SUPABASE_SERVICE_ROLE_KEY": storage.key}
    job = row.id.hex[:8]

    copied = run_cli("download", job, "-o", str(tmp_path / "dl"), env=env)
    assert copied.exit_code == 0, copied.output
    assert (tmp_path / "dl" / package.name).read_bytes() == package.read_bytes()
    url = run_cli("download", job, "--url", "--expires", "600", env=env)
    assert url.exit_code == 0 and httpx.get(url.stdout.strip()).content == package.read_bytes()
    path = run_cli("download", job, "--path", env=env)
    assert path.stdout.strip() == f"{BUCKET}/jobs/{row.id}/{package.name}"
    for result in (copied, url, path):
        assert storage.key not in result.output

    storage.tamper(BUCKET, f"jobs/{row.id}/{package.name}")
    refused = run_cli("download", job, "-o", str(tmp_path / "dl2"), env=env)
    assert refused.exit_code == 1 and "checksum mismatch" in refused.output
    assert not list((tmp_path / "dl2").glob("*"))
    unset = run_cli("download", job, "--url")
    assert unset.exit_code == 1 and "SUPABASE_URL" in unset.output

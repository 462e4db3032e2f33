"""Downloads never write through a link planted at their temporary file's name, whichever way they come: a
local job's package (`lorapod download`), the pod API over HTTP, SFTP, and Supabase Storage."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import presets
from engine.supabase_storage import SupabaseStore
from engine.workdir import Workdir
from remote.provider import ArtifactError
from remote.runpod.http import HttpTransport
from remote.runpod.ssh import SshTransport
from remote.runpod.transport import PodEndpoint
from store.attempts import start_attempt
from store.db import Ledger
from store.ingest import ingest
from store.jobs import create_job, transition
from store.status import JobStatus
from tests.conftest import run_cli
from tests.standins.supabase_storage import StorageStandIn

PRECIOUS = b"a file outside the download folder\n"


def _package(path: Path) -> bytes:
    """A small zip with a manifest, as the engine's packages are; its bytes."""
    content = b"weights" * 1000
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("adapter/weights.bin", content)
        archive.writestr("manifest.json", json.dumps({"files": {"adapter/weights.bin": _sha(content)}}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _planted(tmp_path: Path, folder: Path, name: str) -> Path:
    """A symlink at ``folder/name.partial`` to a file outside ``folder``; that file."""
    outside = tmp_path / "elsewhere" / "precious.txt"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(PRECIOUS)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.partial").symlink_to(outside)
    return outside


def test_lorapod_download_of_a_local_job_never_writes_through_a_planted_link(
    ledger: Ledger, lorapod_home: Path, tmp_path: Path
) -> None:
    spec = presets.get("smoke").to_spec("d.json")
    job = create_job(ledger, spec)
    workdir = Workdir(lorapod_home / "jobs" / str(job.id))
    name = f"lorapod-{job.id.hex[:8]}-adapter.zip"
    data = _package(workdir.packages / name)
    handle = {"provider": "local", "job_id": str(job.id), "workdir": str(workdir.root), "pid": None}
    start_attempt(ledger, job.id, provider="local", handle=handle, rate_usd_per_hour=0.0, gpu_count=0)
    transition(ledger, job.id, JobStatus.PROVISIONING)
    artifact = {"kind": "adapter", "path": str(workdir.packages / name), "size_bytes": len(data), "sha256": _sha(data)}
    events = [
        {"type": "stage", "stage": "training"},
        {"type": "artifact", **artifact},
        {"type": "stage", "stage": "uploading"},
        {"type": "stage", "stage": "completed"},
    ]
    ingest(ledger, job.id, [{"seq": seq, **event} for seq, event in enumerate(events, start=1)])
    out = tmp_path / "out"
    outside = _planted(tmp_path, out, name)

    result = run_cli("download", job.id.hex[:8], "-o", str(out))
    assert outside.read_bytes() == PRECIOUS
    assert result.exit_code == 0, result.output
    assert not (out / name).is_symlink() and (out / name).read_bytes() == data


def test_a_download_from_the_pod_api_refuses_a_planted_link(tmp_path: Path) -> None:
    data = b"package bytes" * 1000

    def pod_api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=data)

    endpoint = PodEndpoint("pod", "/w", "token", "http://pod.invalid", None, None)
    transport = HttpTransport(endpoint, http_transport=httpx.MockTransport(pod_api))
    out = tmp_path / "out"
    outside = _planted(tmp_path, out, "job-adapter.zip")
    with pytest.raises(ArtifactError, match=r"job-adapter\.zip\.partial.*link"):
        transport.download_artifact("job-adapter.zip", out, _sha(data))
    assert outside.read_bytes() == PRECIOUS
    assert not (out / "job-adapter.zip").exists()


class _RemoteFile(io.BytesIO):
    def prefetch(self) -> None:
        pass


class _Sftp:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def __enter__(self) -> _Sftp:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def open(self, path: str, mode: str) -> _RemoteFile:
        return _RemoteFile(self.files[path])


class _Session:
    """Stands in for an SSH connection whose SFTP serves ``files``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def sftp(self) -> _Sftp:
        return _Sftp(self.files)

    def close(self) -> None:
        pass


def test_a_download_over_sftp_refuses_a_planted_link(tmp_path: Path) -> None:
    data = b"package bytes" * 1000
    endpoint = PodEndpoint("pod", "/w", "token", None, "127.0.0.1", 22)
    transport = SshTransport(endpoint, "root", key=None, pins=None)  # type: ignore[arg-type]  # never connects
    transport.session = _Session({"/w/packages/job-adapter.zip": data})  # type: ignore[assignment]
    out = tmp_path / "out"
    outside = _planted(tmp_path, out, "job-adapter.zip")
    with pytest.raises(ArtifactError, match=r"job-adapter\.zip\.partial.*link"):
        transport.download_artifact("job-adapter.zip", out, _sha(data))
    assert outside.read_bytes() == PRECIOUS
    assert not (out / "job-adapter.zip").exists()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[StorageStandIn]:
    stand_in = StorageStandIn(tmp_path / "storage-server").start()
    yield stand_in
    stand_in.stop()


def test_a_download_from_supabase_storage_never_writes_through_a_planted_link(
    storage: StorageStandIn, tmp_path: Path
) -> None:
    store = SupabaseStore(storage.url, storage.key, bucket="model-artifacts", state_dir=tmp_path / "upload-state")
    data = _package(tmp_path / "pkg" / "lorapod-adapter.zip")
    stored = store.upload(tmp_path / "pkg" / "lorapod-adapter.zip", str(uuid.uuid4()))
    out = tmp_path / "out"
    outside = _planted(tmp_path, out, "lorapod-adapter.zip")
    target = store.download(stored.uri, out, sha256=stored.sha256)
    assert outside.read_bytes() == PRECIOUS
    assert not target.is_symlink() and target.read_bytes() == data

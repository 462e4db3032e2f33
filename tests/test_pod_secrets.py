"""A pod's secrets after it starts: a 0600 file on tmpfs that is read once and is gone after, delivered over
the pod API only once per attempt and only with both the pod token and the attempt's bootstrap token."""

from __future__ import annotations

import secrets
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from engine.pod_secrets import (
    SecretsError,
    SecretsInbox,
    await_secrets,
    check_folder,
    encode_secrets,
    filesystem_of,
    secrets_path,
    take_secrets,
    token_sha256,
    write_secrets,
)
from engine.serve import create_app
from tests.conftest import ROOT

TOKEN = "pod-api-token-for-tests"
VALUES = {"HF_TOKEN": 'hf_"quoted"\nsecond-line', "TRAINING_WEBHOOK_SECRET": "whsec_tests"}


@pytest.fixture
def shm() -> Iterator[Path]:
    """A folder on tmpfs, as /dev/shm is in a pod."""
    if filesystem_of(Path("/dev/shm")) != "tmpfs":
        pytest.skip("/dev/shm is not tmpfs on this machine")
    folder = Path("/dev/shm") / f"lorapod-tests-{secrets.token_hex(6)}"
    yield folder
    for path in folder.glob("*") if folder.exists() else []:
        path.unlink()
    if folder.exists():
        folder.rmdir()


def test_the_secrets_file_is_read_once_and_gone_after(shm: Path) -> None:
    path = write_secrets(shm, "job-1", encode_secrets(VALUES, "boot-1"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(shm.stat().st_mode) == 0o700
    assert take_secrets(path, "boot-1") == VALUES
    assert not path.exists()
    with pytest.raises(SecretsError, match="already taken"):
        take_secrets(path, "boot-1")


def test_a_file_meant_for_another_attempt_is_refused_and_removed(shm: Path) -> None:
    path = write_secrets(shm, "job-1", encode_secrets(VALUES, "boot-of-the-last-pod"))
    with pytest.raises(SecretsError, match="another attempt"):
        take_secrets(path, "boot-of-this-pod")
    assert not path.exists()


def test_waiting_for_secrets_that_never_come_fails_clearly(shm: Path) -> None:
    with pytest.raises(SecretsError, match=r"no secrets were delivered within 0 s"):
        await_secrets(secrets_path(shm, "job-1"), "boot-1", 0.3)
    assert await_secrets(secrets_path(shm, "job-1"), "boot-1", 30, lambda: True) is None  # a cancel ends the wait


def test_secrets_are_kept_off_the_volume_and_off_disks(shm: Path, tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="lies on the job's volume"):
        check_folder(tmp_path / "workspace" / "secrets", tmp_path / "workspace")
    disk = ROOT / "tests"
    if filesystem_of(disk) in (None, "tmpfs", "ramfs"):
        pytest.skip("no disk-backed folder to try here")
    with pytest.raises(SecretsError, match="not tmpfs"):
        check_folder(disk / "secrets", None)
    check_folder(shm, tmp_path / "workspace")  # tmpfs, outside the volume: fine


def test_the_pod_api_takes_one_delivery_with_both_tokens(shm: Path, tmp_path: Path) -> None:
    job_id = str(uuid.uuid4())
    inbox = SecretsInbox(shm, job_id, "boot-1", tmp_path / "workspace")
    app = create_app(tmp_path / "workdir", token_sha256_hex=token_sha256(TOKEN), inbox=inbox)
    client = TestClient(app)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = encode_secrets(VALUES, "boot-1")
    # The bootstrap token alone (it is in the pod's env, which RunPod shows) opens nothing.
    assert client.put("/secrets", content=body, headers={"X-Lorapod-Bootstrap": "boot-1"}).status_code == 401
    assert client.put("/secrets", content=body, headers={**auth, "X-Lorapod-Bootstrap": "boot-2"}).status_code == 403
    assert client.put("/secrets", content=b"{}", headers={**auth, "X-Lorapod-Bootstrap": "boot-1"}).status_code == 400
    assert client.put("/secrets", content=body, headers={**auth, "X-Lorapod-Bootstrap": "boot-1"}).status_code == 201
    again = client.put("/secrets", content=encode_secrets({"HF_TOKEN": "x"}, "boot-1"),
                       headers={**auth, "X-Lorapod-Bootstrap": "boot-1"})  # fmt: skip
    assert again.status_code == 409
    path = secrets_path(shm, job_id)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert take_secrets(path, "boot-1") == VALUES  # the first delivery, untouched by the second
    assert client.get("/status", headers=auth).status_code == 200  # the hash authenticates the token
    assert client.get("/status", headers={"Authorization": f"Bearer {token_sha256(TOKEN)}"}).status_code == 401

"""A RunPod job's pod API token stays on this machine: a sync never pushes it, and the provider still reaches
the pod with it. The pod is a real pod API on 127.0.0.1, its REST side an httpx.MockTransport."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

import presets
from engine.pod_secrets import SecretsInbox
from engine.serve import create_app
from engine.workdir import Workdir
from remote.provider import RunHandle
from remote.runpod import RunPodProvider
from remote.runpod.client import RestClient
from store.attempts import current_attempt, start_attempt
from store.db import Ledger
from store.host_keys import Pin
from store.jobs import create_job
from store.settings import Settings
from store.sync import sync
from tests.conftest import ROOT

KEY = "rpa_SECRET_0123456789abcdef"
SECRETS_DIR = Path(f"/dev/shm/lorapod-tests-{os.getpid()}")  # tmpfs, as in a pod
SYNCED_TABLES = ("training_jobs", "job_attempts", "model_artifacts", "training_metrics_history", "job_events")


class NoPins:
    def get(self, host: str, port: int) -> Pin | None:
        return None

    def pin(self, pin: Pin) -> Pin:
        return pin

    def forget(self, host: str, port: int) -> bool:
        return False


class Pod:
    """One pod as RunPod's REST API shows it, and its pod API, which starts with the token the launch sends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.created = ""
        self.inbox: SecretsInbox | None = None
        self._api: ASGIApp | None = None
        self.record: dict[str, Any] = {"id": "pod1", "desiredStatus": "RUNNING", "costPerHr": 2.69}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._api is None:  # the container is still starting
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self._api(scope, receive, send)

    def rest(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/pods"):
            return httpx.Response(200, json=[])  # no earlier pods of the job
        if request.method == "POST":
            body = json.loads(request.content)
            env = body["env"]
            self.created = request.content.decode()
            # The pod knows its token only by its hash, and takes its secrets once over the same API.
            inbox = SecretsInbox(
                Path(env["LORAPOD_SECRETS_DIR"]), env["LORAPOD_JOB_ID"], env["LORAPOD_BOOTSTRAP_TOKEN"], None
            )
            self.inbox = inbox
            self._api = create_app(self.workdir, token_sha256_hex=env["LORAPOD_POD_TOKEN_SHA256"], inbox=inbox)
            self.record["name"] = body["name"]
            return httpx.Response(200, json=self.record)
        return httpx.Response(200, json=self.record)


@pytest.fixture(autouse=True)
def _no_secrets_left() -> Iterator[None]:
    yield
    shutil.rmtree(SECRETS_DIR, ignore_errors=True)


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[tuple[Pod, str]]:
    """A pod and the URL of its pod API (served on 127.0.0.1, as RunPod's proxy would)."""
    stand_in = Pod(tmp_path / "pod-workdir")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(stand_in, lifespan="off", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield stand_in, f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def _provider(pod: Pod, url: str) -> RunPodProvider:
    settings = Settings(
        runpod_api_key=KEY, runpod_image="lorapod:test", runpod_transport="http", runpod_proxy_url=url,
        runpod_start_timeout_s=30, runpod_secrets_dir=str(SECRETS_DIR),
    )  # fmt: skip
    rest = RestClient(settings.runpod_api_url, KEY, transport=httpx.MockTransport(pod.rest), sleep=lambda s: None)
    return RunPodProvider(settings, NoPins(), rest=rest, sleep=time.sleep)


def _remote_text(db: str) -> str:
    """Every row of every synced table in the database, as JSON text."""
    with psycopg.connect(db) as conn:
        rows = [
            conn.execute(f"SELECT row_to_json(t)::text FROM lorapod.{table} t").fetchall() for table in SYNCED_TABLES
        ]
    return "\n".join(text for found in rows for (text,) in found)


def test_the_pod_token_is_never_pushed_and_still_reaches_the_pod(
    db: str, ledger: Ledger, lorapod_home: Path, tmp_path: Path, pod: tuple[Pod, str]
) -> None:
    stand_in, url = pod
    dataset = tmp_path / "data.json"
    dataset.write_bytes((ROOT / "samples" / "brightrun-sample.json").read_bytes())
    digest = hashlib.sha256(dataset.read_bytes()).hexdigest()
    spec = presets.get("smoke").to_spec(str(dataset), ["provider=runpod", f"dataset_sha256={digest}"])
    job = create_job(ledger, spec)
    handle = _provider(stand_in, url).launch(job.id, spec)
    token = (lorapod_home / "pod-tokens" / "pod1").read_text()
    assert token and (Workdir(stand_in.workdir).inputs / "data.json").is_file()
    assert token not in stand_in.created  # RunPod shows a pod's env: only the token's hash went there
    assert stand_in.inbox is not None and stand_in.inbox.spent  # its secrets were delivered, over the pod API
    start_attempt(ledger, job.id, provider="runpod", handle=handle.model_dump(), rate_usd_per_hour=2.69, gpu_count=1)
    # An attempt recorded before tokens were kept apart still holds one in its handle.
    older = create_job(ledger, spec)
    legacy = {**handle.model_dump(), "extra": {**handle.extra, "pod_token": "legacy-token-4d2c"}}
    start_attempt(ledger, older.id, provider="runpod", handle=legacy, rate_usd_per_hour=2.69, gpu_count=1)

    report = sync(ledger, db)
    assert report.table("job_attempts").sent == 2
    pushed = _remote_text(db)
    assert str(job.id) in pushed
    assert token not in pushed and "legacy-token-4d2c" not in pushed
    with ledger.read() as session:
        local = session.connection().exec_driver_sql("SELECT handle FROM job_attempts").scalars().all()
    assert not [row for row in local if token in str(row)]  # the ledger's rows are the ones that sync

    # Another process (a fresh provider, the handle read back from the ledger) still reaches the pod: the token
    # is in a file of the data dir that only its owner can read.
    assert stat.S_IMODE((lorapod_home / "pod-tokens" / "pod1").stat().st_mode) == 0o600
    attempt = current_attempt(ledger, job.id)
    assert attempt is not None
    _provider(stand_in, url).cancel(RunHandle.model_validate(attempt.handle), "enough for today")
    assert Workdir(stand_in.workdir).cancel_requested() == "enough for today"

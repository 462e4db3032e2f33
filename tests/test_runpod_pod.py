"""The pod side of a RunPod job: the dataset upload route, the exit marker, and the entrypoint's watchdog."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from engine.serve import create_app
from engine.workdir import Workdir
from tests.conftest import ROOT

TOKEN = "pod-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tmp_path / "job", TOKEN)) as test_client:
        yield test_client


def test_an_uploaded_dataset_lands_whole_and_only_with_its_checksum(client: TestClient, tmp_path: Path) -> None:
    data = b'{"conversations": []}\n' * 1000
    digest = hashlib.sha256(data).hexdigest()
    inputs = Workdir(tmp_path / "job").inputs
    assert client.put("/inputs/data.json", content=data).status_code == 401
    assert client.put("/inputs/data.json", content=data, headers=AUTH).status_code == 400  # no checksum header
    wrong = client.put("/inputs/data.json", content=data + b"x", headers={**AUTH, "X-Content-SHA256": digest})
    assert wrong.status_code == 422 and not list(inputs.iterdir())
    done = client.put("/inputs/data.json", content=data, headers={**AUTH, "X-Content-SHA256": digest})
    assert done.status_code == 201 and done.json() == {"name": "data.json", "size": len(data), "sha256": digest}
    assert (inputs / "data.json").read_bytes() == data
    assert [p.name for p in inputs.iterdir()] == ["data.json"]
    assert client.put("/inputs/.hidden", content=data, headers={**AUTH, "X-Content-SHA256": digest}).status_code == 400


def test_status_reports_how_the_engine_ended_once_the_pod_noted_it(client: TestClient, tmp_path: Path) -> None:
    assert client.get("/status", headers=AUTH).json()["engine_exit"] is None
    marker = {"pod_id": "abc", "exit_code": 0, "last_seq": 44, "ended_at": "2026-11-22T10:00:00+00:00"}
    path = Workdir(tmp_path / "job").engine_exit
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(marker))
    assert client.get("/status", headers=AUTH).json()["engine_exit"] == marker


class FakeRunPod:
    """Records the REST calls a pod makes about itself."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.calls.append((request.method, request.path, request.headers.get("Authorization", "")))
        return Response(status=204)(environ, start_response)


def test_the_watchdog_deletes_a_pod_whose_job_outlives_its_maximum(tmp_path: Path) -> None:
    """The real entrypoint, with no sshd and a dataset that never comes: at the limit the pod deletes itself."""
    runpod = FakeRunPod()
    workspace = tmp_path / "workspace"
    spec = {"job_id": "job-1", "dataset": {"dataset_path": str(workspace / "never.json")}}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LORAPOD_", "RUNPOD_"))},
        "LORAPOD_JOB_ID": "job-1", "LORAPOD_SPEC": json.dumps(spec), "LORAPOD_POD_TOKEN": TOKEN,
        "LORAPOD_WORKSPACE": str(workspace), "LORAPOD_SSHD": "/nonexistent/sshd", "LORAPOD_POD_API_PORT": "0",
        "LORAPOD_AUTHORIZED_KEYS": str(tmp_path / "keys"), "LORAPOD_PYTHON": sys.executable,
        "LORAPOD_AWAIT_INPUT": "never.json", "LORAPOD_MAX_SECONDS": "3", "LORAPOD_RUNPOD_API_URL": runpod.url,
        "RUNPOD_POD_ID": "pod123", "RUNPOD_API_KEY": "pod-scoped-key", "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    process = subprocess.run(
        ["bash", str(ROOT / "pod" / "entrypoint.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    runpod.server.shutdown()
    output = process.stdout + process.stderr
    assert runpod.calls == [("DELETE", "/v1/pods/pod123", "Bearer pod-scoped-key")], output
    assert process.returncode == 0, output
    workdir = Workdir(workspace / "lorapod" / "jobs" / "job-1")
    assert "watchdog" in (workdir.cancel_requested() or "")
    assert "watchdog" in workdir.pod_log.read_text() and "no sshd" in workdir.pod_log.read_text()
    assert "pod-scoped-key" not in workdir.pod_log.read_text()

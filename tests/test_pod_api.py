"""The pod API: bearer auth, status, long-poll and SSE events, logs, cancel, artifacts with Range resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from engine.events import EventWriter, MetricsEvent, StageEvent, StatusEvent
from engine.serve import create_app, main
from engine.workdir import Workdir
from tests.conftest import ROOT
from tests.engine_helpers import wait_for

TOKEN = "pod-token-7f3a9c2e5b1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROTECTED = [
    ("GET", "/status"),
    ("GET", "/events?after=0&wait=0"),
    ("GET", "/logs?offset=0"),
    ("POST", "/cancel"),
    ("GET", "/artifacts"),
    ("GET", "/artifacts/job-1-adapter.zip"),
    ("GET", "/no-such-route"),
]


def _emit(workdir: Path, *events: Any) -> None:
    with EventWriter(Workdir(workdir).events, "job-1") as writer:
        for event in events:
            writer.emit(event)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    root = tmp_path / "job-1"
    _emit(
        root,
        StageEvent(stage="preprocessing"),
        StageEvent(stage="training"),
        MetricsEvent(step=10, total_steps=100, epoch=0.3, loss=1.25, learning_rate=2e-4, elapsed=12.0),
        StatusEvent(step=20, total_steps=100, epoch=0.6, message="step 20/100"),
    )
    packages = Workdir(root).packages
    packages.mkdir()
    (packages / "job-1-adapter.zip").write_bytes(os.urandom(300_000))
    (packages / "job-1-deploy.zip").write_bytes(b"PK" + os.urandom(5_000))
    return root


@pytest.fixture
def client(workdir: Path) -> Iterator[TestClient]:
    app = create_app(workdir, TOKEN, sse_seconds=1.0, keepalive_seconds=0.2, poll_seconds=0.02)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def server(workdir: Path) -> Iterator[str]:
    """A real uvicorn on 127.0.0.1 (a free port), in a thread, logging through the root logger."""
    app = create_app(workdir, TOKEN, sse_seconds=1.5, keepalive_seconds=0.2, poll_seconds=0.02)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="info", timeout_graceful_shutdown=1)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert uv.started
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)
    sock.close()


def _fake_engine(workdir: Path) -> subprocess.Popen[bytes]:
    """A process that sleeps, with the workdir on its command line as the engine's has it."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "run", "--workdir", str(workdir)])


def _sse(lines: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The events (id and data) and the comments of an SSE stream's lines."""
    events, comments, current = [], [], {}
    for line in lines:
        if not line:
            if "data" in current:
                events.append(current)
            current = {}
        elif line.startswith(":"):
            comments.append(line[1:].strip())
        else:
            field, _, value = line.partition(": ")
            current[field] = value
    return [{"id": int(e["id"]), **json.loads(e["data"])} for e in events], comments


# -- auth -------------------------------------------------------------------------------------------------


def test_health_is_open(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}],
    ids=["missing", "wrong", "other-scheme", "empty"],
)
def test_protected_routes_refuse_a_missing_or_wrong_token(
    client: TestClient, workdir: Path, method: str, path: str, headers: dict[str, str]
) -> None:
    response = client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "unauthorized"}  # the same for routes that exist and those that don't
    assert TOKEN not in response.text
    assert not Workdir(workdir).cancel_request.exists()


def test_every_protected_route_opens_with_the_token(client: TestClient) -> None:
    for method, path in PROTECTED[:-1]:
        assert client.request(method, path, headers=AUTH).status_code == 200, path
    assert client.get("/no-such-route", headers=AUTH).status_code == 404


def test_a_real_server_refuses_without_the_token_and_never_logs_it(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for method, path in PROTECTED:
        assert httpx.request(method, server + path).status_code == 401
        assert httpx.request(method, server + path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(server + "/status", headers=AUTH).status_code == 200
    assert "GET /status" in caplog.text  # the access log is on, and holds no token
    assert TOKEN not in caplog.text


def test_main_refuses_to_start_without_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(tmp_path, port=0, host="127.0.0.1") == 2
    assert "LORAPOD_POD_TOKEN is not set" in capsys.readouterr().err


def test_main_serves_until_sigterm(workdir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = (
        "import sys; from pathlib import Path; from engine.serve import main; "
        f"sys.exit(main(Path({str(workdir)!r}), port={port}, host='127.0.0.1'))"
    )
    env = {**os.environ, "LORAPOD_POD_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/status", headers=AUTH)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
        assert response.json()["job_id"] == "job-1"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    assert TOKEN not in stderr


# -- status and events ------------------------------------------------------------------------------------


def test_status_folds_the_events(client: TestClient) -> None:
    status = client.get("/status", headers=AUTH).json()
    assert status["job_id"] == "job-1"
    assert status["stage"] == "training"
    assert (status["step"], status["total_steps"], status["epoch"], status["loss"]) == (20, 100, 0.6, 1.25)
    assert status["last_seq"] == 4
    assert status["terminal"] is False
    assert status["engine_running"] is False


def test_status_sees_the_terminal_stage_and_a_live_engine(client: TestClient, workdir: Path) -> None:
    engine = _fake_engine(workdir)
    try:
        Workdir(workdir).pid_file.write_text(str(engine.pid))
        _emit(workdir, StageEvent(stage="failed", message="out of memory"))
        status = client.get("/status", headers=AUTH).json()
        assert (status["stage"], status["message"], status["terminal"]) == ("failed", "out of memory", True)
        assert (status["engine_running"], status["engine_pid"]) == (True, engine.pid)
    finally:
        engine.kill()
        engine.wait()


def test_events_after_a_seq_return_at_once(client: TestClient) -> None:
    started = time.monotonic()
    events = client.get("/events", params={"after": 2, "wait": 30}, headers=AUTH).json()
    assert time.monotonic() - started < 10  # long before the 30 s wait
    assert [(e["seq"], e["type"]) for e in events] == [(3, "metrics"), (4, "status")]
    assert client.get("/events", params={"after": 0, "limit": 2}, headers=AUTH).json()[-1]["seq"] == 2


def test_a_long_poll_wakes_when_an_event_is_appended(client: TestClient, workdir: Path) -> None:
    timer = threading.Timer(0.3, _emit, args=(workdir, StageEvent(stage="evaluating")))
    timer.start()
    started = time.monotonic()
    events = client.get("/events", params={"after": 4, "wait": 30}, headers=AUTH).json()
    timer.join()
    assert [(e["seq"], e["stage"]) for e in events] == [(5, "evaluating")]
    assert time.monotonic() - started < 10


def test_a_long_poll_returns_nothing_after_its_wait(client: TestClient) -> None:
    started = time.monotonic()
    assert client.get("/events", params={"after": 4, "wait": 0.3}, headers=AUTH).json() == []
    assert time.monotonic() - started >= 0.3


def test_events_refuse_a_wait_past_the_proxy_limit(client: TestClient) -> None:
    assert client.get("/events", params={"wait": 61}, headers=AUTH).status_code == 422


def test_events_survive_a_partial_line_and_a_long_file(client: TestClient, workdir: Path) -> None:
    _emit(workdir, *[MetricsEvent(step=s, total_steps=5000, epoch=0.1, elapsed=1.0) for s in range(2000)])
    with Workdir(workdir).events.open("ab") as handle:
        handle.write(b'{"v": 1, "seq": 9999, "type": "st')  # still being written
    events = client.get("/events", params={"after": 2000, "wait": 0}, headers=AUTH).json()
    assert [e["seq"] for e in events] == list(range(2001, 2005))
    assert client.get("/status", headers=AUTH).json()["last_seq"] == 2004


def test_sse_streams_events_with_ids_and_resumes_from_last_event_id(server: str, workdir: Path) -> None:
    headers = {**AUTH, "Accept": "text/event-stream"}
    with httpx.stream("GET", server + "/events", params={"after": 1}, headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        threading.Timer(0.2, _emit, args=(workdir, StageEvent(stage="evaluating"))).start()
        lines = list(response.iter_lines())  # the stream ends itself (after 1.5 s here)
    events, comments = _sse(lines)
    assert [(e["id"], e["seq"]) for e in events] == [(2, 2), (3, 3), (4, 4), (5, 5)]
    assert events[-1]["stage"] == "evaluating"
    assert "keep-alive" in comments
    assert "retry: 1000" in lines

    resume = {**headers, "Last-Event-ID": "3"}
    with httpx.stream("GET", server + "/events", params={"after": 1}, headers=resume, timeout=10) as response:
        events, _ = _sse(list(response.iter_lines()))
    assert [e["id"] for e in events] == [4, 5]


def test_sse_through_the_asgi_transport(client: TestClient) -> None:
    headers = {**AUTH, "Accept": "text/event-stream"}
    with client.stream("GET", "/events", params={"after": 3}, headers=headers) as response:
        events, _ = _sse(list(response.iter_lines()))
    assert [e["id"] for e in events] == [4]


# -- logs -------------------------------------------------------------------------------------------------


def test_logs_read_in_chunks_from_an_offset(client: TestClient, workdir: Path) -> None:
    log = Workdir(workdir).log_file
    empty = client.get("/logs", headers=AUTH).json()
    assert (empty["data"], empty["next_offset"], empty["eof"]) == ("", 0, True)
    log.parent.mkdir()
    text = "".join(f"step {i}: loss 1.{i:03d} — ok ✓\n" for i in range(200))
    log.write_text(text, encoding="utf-8")
    offset, pieces = 0, []
    while True:
        chunk = client.get("/logs", params={"offset": offset, "limit": 1000}, headers=AUTH).json()
        assert chunk["offset"] == offset
        assert chunk["size"] == len(text.encode())
        pieces.append(chunk["data"])
        offset = chunk["next_offset"]
        if chunk["eof"]:
            break
    assert "".join(pieces) == text  # no character cut in two at a chunk boundary
    with log.open("a", encoding="utf-8") as handle:
        handle.write("done\n")
    assert client.get("/logs", params={"offset": offset}, headers=AUTH).json()["data"] == "done\n"
    assert client.get("/logs", params={"offset": offset + 100}, headers=AUTH).status_code == 416
    assert client.get("/logs", params={"limit": 2 * 1024 * 1024}, headers=AUTH).status_code == 422


# -- cancel -----------------------------------------------------------------------------------------------


def test_cancel_requests_a_stop_and_signals_the_engine_once(client: TestClient, workdir: Path) -> None:
    engine = _fake_engine(workdir)
    try:
        work = Workdir(workdir)
        work.pid_file.write_text(str(engine.pid))
        done = client.post("/cancel", json={"reason": "loss diverged"}, headers=AUTH).json()
        assert done["requested"] is True
        assert done["signalled_pid"] == engine.pid
        assert engine.wait(timeout=10) == -signal.SIGTERM
        assert work.cancel_requested() == "loss diverged"
        again = client.post("/cancel", headers=AUTH).json()
        assert (again["requested"], again["already_requested"], again["signalled_pid"]) == (False, True, None)
        assert again["reason"] == "loss diverged"
    finally:
        engine.kill()
        engine.wait()
    events = client.get("/events", params={"after": 4, "wait": 0}, headers=AUTH).json()
    assert [(e["type"], e["message"]) for e in events] == [
        ("log", "cancel requested through the pod API: loss diverged")
    ]


def test_cancel_leaves_alone_a_process_that_a_stale_pid_file_names(client: TestClient, workdir: Path) -> None:
    """The engine died without removing engine.pid, and its pid now belongs to an unrelated process."""
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Workdir(workdir).pid_file.write_text(str(unrelated.pid))
        assert client.get("/status", headers=AUTH).json()["engine_running"] is False
        done = client.post("/cancel", json={"reason": "stop"}, headers=AUTH).json()
        assert (done["requested"], done["signalled_pid"], done["engine_running"]) == (True, None, False)
        with pytest.raises(subprocess.TimeoutExpired):
            unrelated.wait(timeout=1)  # still running: never signalled
        assert Workdir(workdir).cancel_requested() == "stop"
    finally:
        unrelated.kill()
        unrelated.wait()


def test_cancelling_a_finished_job_changes_nothing(client: TestClient, workdir: Path) -> None:
    _emit(workdir, StageEvent(stage="completed"))
    done = client.post("/cancel", headers=AUTH).json()
    assert (done["requested"], done["terminal"]) == (False, True)
    assert "already ended" in done["message"]
    assert not Workdir(workdir).cancel_request.exists()
    assert client.get("/status", headers=AUTH).json()["last_seq"] == 5  # the terminal stage stays the last word


# -- artifacts --------------------------------------------------------------------------------------------


def test_artifacts_list_names_sizes_and_checksums(client: TestClient, workdir: Path, tmp_path: Path) -> None:
    packages = Workdir(workdir).packages
    (packages / "job-1-full.zip.tmp").write_bytes(b"half written")
    (packages / "subdir").mkdir()
    (tmp_path / "outside.zip").write_bytes(b"not a package")
    (packages / "link.zip").symlink_to(tmp_path / "outside.zip")
    listing = client.get("/artifacts", headers=AUTH).json()["artifacts"]
    assert [a["name"] for a in listing] == ["job-1-adapter.zip", "job-1-deploy.zip"]
    for item in listing:
        content = (packages / item["name"]).read_bytes()
        assert item["size"] == len(content)
        assert item["sha256"] == hashlib.sha256(content).hexdigest()
        assert item["sha256_pending"] is False

    (packages / "job-1-deploy.zip").write_bytes(b"rebuilt package")
    listing = client.get("/artifacts", headers=AUTH).json()["artifacts"]
    assert listing[1]["sha256"] == hashlib.sha256(b"rebuilt package").hexdigest()


def test_an_artifact_download_resumes_with_range(server: str, workdir: Path) -> None:
    path = Workdir(workdir).packages / "job-1-adapter.zip"
    url = f"{server}/artifacts/{path.name}"
    received = bytearray()
    with httpx.stream("GET", url, headers=AUTH) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == path.stat().st_size
        assert response.headers["accept-ranges"] == "bytes"
        for chunk in response.iter_raw():
            received += chunk
            if len(received) >= 100_000:
                break  # the connection drops mid-download
    with httpx.stream("GET", url, headers={**AUTH, "Range": f"bytes={len(received)}-"}) as response:
        assert response.status_code == 206
        size = path.stat().st_size
        assert response.headers["content-range"] == f"bytes {len(received)}-{size - 1}/{size}"
        received += response.read()
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    past_end = httpx.get(url, headers={**AUTH, "Range": f"bytes={size}-"})
    assert past_end.status_code == 416


def test_artifact_names_cannot_leave_packages(client: TestClient, workdir: Path, tmp_path: Path) -> None:
    (workdir / "secret.zip").write_bytes(b"outside packages")
    (tmp_path / "elsewhere.zip").write_bytes(b"outside the workdir")
    (Workdir(workdir).packages / "link.zip").symlink_to(tmp_path / "elsewhere.zip")
    (Workdir(workdir).packages / "dir.zip").mkdir()
    for name in ["..%2Fsecret.zip", "%2e%2e%2Fsecret.zip", ".secret.zip", "link.zip", "dir.zip", "missing.zip"]:
        response = client.get(f"/artifacts/{name}", headers=AUTH)
        assert response.status_code == 404, name
        assert b"outside" not in response.content


def test_raw_traversal_requests_are_refused(server: str, workdir: Path) -> None:
    """Paths sent byte for byte, as no HTTP client library would normalize them."""
    (workdir / "secret.zip").write_bytes(b"outside packages")
    host, port = server.removeprefix("http://").split(":")
    targets = [
        "/artifacts/../secret.zip",
        "/artifacts/..%2Fsecret.zip",
        "/artifacts/%2e%2e/secret.zip",
        "/artifacts/..",
    ]
    for target in targets:
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            request = f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            conn.sendall(request.encode())
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 404"), target
        assert b"outside packages" not in reply


# -- inputs -----------------------------------------------------------------------------------------------


def _sizes(folder: Path) -> list[int]:
    """The sizes of the files in ``folder`` (none while it does not exist; one renamed meanwhile is skipped)."""
    found = []
    for path in folder.glob("*") if folder.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            found.append(path.stat().st_size)
    return found


def _put(server: str, name: str, body: Any, data: bytes) -> httpx.Response:
    headers = {**AUTH, "X-Content-SHA256": hashlib.sha256(data).hexdigest()}
    return httpx.put(f"{server}/inputs/{name}", content=body, headers=headers, timeout=30)


def test_two_uploads_of_one_name_at_once_each_land_whole(server: str, workdir: Path) -> None:
    first, second = os.urandom(300_000), os.urandom(200_000)
    inputs = Workdir(workdir).inputs
    release = threading.Event()

    def slow_first() -> Iterator[bytes]:
        yield first[:100_000]
        release.wait(20)  # the second upload starts and ends meanwhile
        yield first[100_000:]

    answers: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: answers.update(first=_put(server, "data.json", slow_first(), first)))
    thread.start()
    wait_for(lambda: any(size >= 100_000 for size in _sizes(inputs)), timeout=20)
    answers["second"] = _put(server, "data.json", second, second)
    release.set()
    thread.join(30)
    assert answers["second"].status_code == 201
    assert answers["first"].status_code == 201
    assert (inputs / "data.json").read_bytes() == first  # the upload that ended last, whole
    assert [path.name for path in inputs.iterdir()] == ["data.json"]


def test_an_upload_cut_off_leaves_no_file_and_one_clear_log_line(
    server: str, workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    inputs = Workdir(workdir).inputs
    host, port = server.removeprefix("http://").split(":")
    head = (
        f"PUT /inputs/data.json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"X-Content-SHA256: {'0' * 64}\r\nContent-Length: 1000000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head.encode() + os.urandom(100_000))
        wait_for(lambda: any(size >= 100_000 for size in _sizes(inputs)), timeout=20)
    # The client is gone with 900 kB unsent.
    wait_for(lambda: not _sizes(inputs), timeout=20)
    wait_for(lambda: "data.json" in caplog.text, timeout=20)
    time.sleep(0.2)  # anything logged after the line itself
    assert "Traceback" not in caplog.text
    assert not [record for record in caplog.records if record.exc_info]
    lines = [record.getMessage() for record in caplog.records if "data.json" in record.getMessage()]
    assert len(lines) == 1 and "disconnected" in lines[0], lines


def test_an_upload_with_the_longest_name_allowed_lands(client: TestClient, workdir: Path) -> None:
    name = "d" * 250 + ".json"  # 255 characters: the most a file name may have
    data = b'{"conversations": []}\n'
    headers = {**AUTH, "X-Content-SHA256": hashlib.sha256(data).hexdigest()}
    assert client.put(f"/inputs/{name}", content=data, headers=headers).status_code == 201
    assert [path.name for path in Workdir(workdir).inputs.iterdir()] == [name]

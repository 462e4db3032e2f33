"""lorapod warns when the Hugging Face token it is handed can write: a job only reads from the Hub. The Hub is a
local stand-in of ``/api/whoami-v2`` (reached through HF_ENDPOINT, as huggingface_hub reaches it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import pytest

from remote import hf_token
from remote.hf_token import hf_token_warning, write_permissions
from store.settings import Settings
from tests.engine_helpers import SAMPLE
from tests.runpod_helpers import Cluster, lorapod, require_services

READ = {"role": "read", "displayName": "classic read"}
WRITE = {"role": "write", "displayName": "classic write"}
FINE_READ = {
    "role": "fineGrained",
    "fineGrained": {
        "global": ["inference.serverless.write", "discussion.read"],
        "scoped": [{"entity": {"type": "model", "name": "meta-llama/Meta-Llama-3-70B-Instruct"},
                    "permissions": ["repo.content.read"]}],
    },
}  # fmt: skip
FINE_WRITE = {
    "role": "fineGrained",
    "fineGrained": {"global": [], "scoped": [{"entity": {"type": "user", "name": "brightrun"},
                                              "permissions": ["repo.content.read", "repo.write"]}]},
}  # fmt: skip
TOKENS = {"hf_READ_1": READ, "hf_WRITE_2": WRITE, "hf_FINEREAD_3": FINE_READ, "hf_FINEWRITE_4": FINE_WRITE}


@pytest.fixture(scope="module")
def hub() -> Iterator[str]:
    """whoami-v2 as the Hub answers it: 401 without a token it knows, the token's access otherwise."""

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            access = TOKENS.get(token)
            if self.path != "/api/whoami-v2" or access is None:
                body, status = b'{"error": "Invalid credentials in Authorization header"}', 401
            else:
                body, status = (
                    json.dumps({"type": "user", "name": "brightrun", "auth": {"accessToken": access}}).encode(),
                    200,
                )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_token, "_checked", {})


def test_write_permissions_read_a_tokens_access() -> None:
    assert write_permissions(READ) == [] and write_permissions(FINE_READ) == []  # inference calls write nothing
    assert write_permissions(WRITE) == ["role write"]
    assert write_permissions(FINE_WRITE) == ["repo.write on brightrun"]


@pytest.mark.parametrize(
    ("token", "warns"), [("hf_READ_1", False), ("hf_FINEREAD_3", False), ("hf_WRITE_2", True), ("hf_FINEWRITE_4", True)]
)
def test_a_token_that_can_write_is_warned_about(
    hub: str, monkeypatch: pytest.MonkeyPatch, token: str, warns: bool
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub)
    warning = hf_token_warning(Settings(hf_token=token))  # type: ignore[arg-type]
    assert (warning is not None) is warns
    if warning:
        assert "fine-grained" in warning and token not in warning


def test_an_unknown_token_or_an_unreachable_hub_stops_nothing(hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub)
    assert hf_token_warning(Settings(hf_token="hf_UNKNOWN")) is None  # type: ignore[arg-type]
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hf_token_warning(Settings(hf_token="hf_WRITE_2")) is None  # type: ignore[arg-type]


def test_the_plan_warns_about_a_write_token(
    hub: str, tmp_path_factory: pytest.TempPathFactory, demo_model: Path
) -> None:
    require_services()
    cluster = Cluster.start(tmp_path_factory.mktemp("runpod-hf"), demo_model)
    try:
        args = ["run", "--provider", "runpod", "--preset", "smoke", "--dataset", str(SAMPLE), "--plan"]
        env = cluster.env(
            tmp_path_factory.mktemp("home"), HF_TOKEN="hf_FINEWRITE_4", HF_ENDPOINT=hub, HF_HUB_OFFLINE="0"
        )
        result = lorapod(*args, env=env)
        assert "warning: HF_TOKEN can write (repo.write on brightrun)" in result.stdout, result.stdout + result.stderr
        assert "hf_FINEWRITE_4" not in result.stdout + result.stderr
        env["HF_TOKEN"] = "hf_FINEREAD_3"
        assert "warning: HF_TOKEN" not in lorapod(*args, env=env).stdout
    finally:
        cluster.standin.stop()

"""A local stand-in for the Hugging Face Hub's HTTP API: the parts ``HfApi.create_repo`` and ``upload_folder`` use.

A real HTTP server on 127.0.0.1 (a thread); point ``HF_ENDPOINT`` at ``url``. It speaks:

- ``POST /api/repos/create`` ({"name", "organization", "type", "visibility"}) → 200 {"url", "name"}, or 409
  when the repo exists (``exist_ok`` callers read that as fine);
- ``POST /api/validate-yaml`` ({"content", "repoType"}): a model card's metadata, accepted (kept in ``cards``);
- ``GET /api/agent-harnesses``: the client's telemetry registry, empty;
- ``POST /api/models/{repo}/preupload/{revision}`` → every file ``regular`` (sent inline in the commit);
- ``POST /api/models/{repo}/commit/{revision}``: NDJSON, a ``header`` line then one ``file`` line per file
  with base64 content → 200 {"commitOid", "commitUrl"}; the files are kept, per repo, in ``repos``;
- ``GET /api/models/{repo}`` → the repo's info, or 404 with the Hub's ``X-Error-Code: RepoNotFound``.

Every request but the telemetry registry must carry ``Authorization: Bearer <token>``; ``requests`` logs each
(method, path).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)


class HubStandIn:
    """The stand-in server; ``with HubStandIn(token) as hub:`` starts and stops it."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.cards: list[str] = []  # each README.md the client asked to validate before committing it
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    self._reply(401, {"error": "Invalid credentials in Authorization header"})
                    return False
                return True

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append(("GET", path))
                if path == "/api/agent-harnesses":  # the client's best-effort telemetry registry: an empty one
                    self._reply(200, {"standardEnvVars": [], "harnesses": {}})
                    return
                if not self._authorized():
                    return
                if path.startswith("/api/models/"):
                    repo_id = path.removeprefix("/api/models/").split("/revision/")[0]
                    repo = hub.repos.get(repo_id)
                    if repo is None:
                        self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                        return
                    siblings = [{"rfilename": name} for name in sorted(repo.files)]
                    sha = repo.commits[-1] if repo.commits else "0" * 40
                    self._reply(200, {"id": repo_id, "private": repo.private, "sha": sha, "siblings": siblings})
                    return
                self._reply(404, {"error": f"no route {path}"})

            def do_POST(self) -> None:
                path = unquote(urlsplit(self.path).path)
                body = self._body()
                hub.requests.append(("POST", path))
                if not self._authorized():
                    return
                if path == "/api/validate-yaml":
                    hub.cards.append(json.loads(body)["content"])
                    self._reply(200, {"warnings": []})
                elif path == "/api/repos/create":
                    self._create(json.loads(body))
                elif path.startswith("/api/models/") and "/preupload/" in path:
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                             for f in json.loads(body)["files"]]  # fmt: skip
                    self._reply(200, {"files": files})
                elif path.startswith("/api/models/") and "/commit/" in path:
                    self._commit(path.removeprefix("/api/models/").split("/commit/")[0], body)
                else:
                    self._reply(404, {"error": f"no route {path}"})

            def _create(self, request: dict[str, Any]) -> None:
                name = request["name"]
                repo_id = f"{request['organization']}/{name}" if request.get("organization") else name
                if repo_id in hub.repos:
                    self._reply(409, {"error": "You already created this model repo", "url": ""})
                    return
                hub.repos[repo_id] = Repo(private=request.get("visibility", "public") == "private")
                self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

            def _commit(self, repo_id: str, body: bytes) -> None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        value = item["value"]
                        assert value["encoding"] == "base64", value["encoding"]
                        repo.files[value["path"]] = base64.b64decode(value["content"])
                oid = hashlib.sha1(body).hexdigest()
                repo.commits.append(oid)
                self._reply(200, {"commitOid": oid, "commitUrl": f"{hub.url}/{repo_id}/commit/{oid}"})

        return Handler

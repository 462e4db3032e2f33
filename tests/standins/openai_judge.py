"""A local stand-in for an OpenAI-compatible chat-completions endpoint that answers judge prompts by script.

A real HTTP server on 127.0.0.1 (a thread) serving ``POST /v1/chat/completions`` as OpenAI documents it: the
request's ``model`` and ``messages``; the answer ``{"id", "object": "chat.completion", "model", "choices":
[{"index": 0, "message": {"role": "assistant", "content"}, "finish_reason": "stop"}]}``. A request without
``Authorization: Bearer <key>`` gets OpenAI's 401 error shape.

``script(user_message) -> str`` writes each answer from the prompt's text; every request is kept in
``requests`` so a test can see what the judge was shown, in which order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JudgeStandIn:
    def __init__(self, script: Callable[[str], str], key: str = "sk-test-judge") -> None:
        self.script = script
        self.key = key
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> JudgeStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
                    return
                if self.headers.get("Authorization") != f"Bearer {standin.key}":
                    error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
                    self._send(401, {"error": {**error, "code": "invalid_api_key"}})
                    return
                standin.requests.append(body)
                user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                content = standin.script(user)
                choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                self._send(
                    200,
                    {"id": f"chatcmpl-{len(standin.requests)}", "object": "chat.completion", "model": body["model"],
                     "choices": [choice]},
                )  # fmt: skip

        return Handler

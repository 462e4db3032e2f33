"""The HTTP transport: the pod API (engine/serve.py) through RunPod's proxy, with the job's bearer token.

The proxy ends any request after 100 seconds, so events come by long-polls of ``EVENTS_WAIT_S`` and packages
in Range requests of ``chunk_bytes``, resumed where a cut one stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx

from remote.provider import ArtifactError
from remote.runpod.errors import SecretsRefused, TransportError
from remote.runpod.transport import EventFeed, PodEndpoint, PodTransport, finish_download, open_download

EVENTS_WAIT_S = 20.0
CHUNK_BYTES = 64 * 1024 * 1024
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
HASH_RETRIES = 30


class PodToken(httpx.Auth):
    """The job's pod API token as a bearer token; it never shows in a repr."""

    def __init__(self, token: str) -> None:
        self.__token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.__token}"
        yield request

    def __repr__(self) -> str:
        return "PodToken(<redacted>)"


class HttpFeed(EventFeed):
    """Long-polls of ``GET /events?after=SEQ``."""

    name = "http"

    def __init__(self, transport: HttpTransport, after_seq: int) -> None:
        self.owner = transport
        self.client = transport.new_client(httpx.Timeout(EVENTS_WAIT_S + 20, connect=10.0))
        super().__init__(after_seq)

    def follow(self, after_seq: int) -> Iterator[dict[str, Any]]:
        while not self._stop.is_set():
            params = {"after": after_seq, "wait": EVENTS_WAIT_S}
            response = self.owner.send(self.client, "GET", "/events", params=params)
            events = response.json()
            self.mark_alive()
            for event in events if isinstance(events, list) else []:
                if isinstance(event, dict) and int(event.get("seq", 0)) > after_seq:
                    after_seq = int(event["seq"])
                    yield event

    def interrupt(self) -> None:
        self.client.close()


class HttpTransport(PodTransport):
    """The pod over its HTTP port (always offered: every lorapod pod exposes it)."""

    name = "http"

    def __init__(
        self,
        endpoint: PodEndpoint,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(endpoint)
        self.chunk_bytes = chunk_bytes
        self._http_transport = http_transport
        self._auth = PodToken(endpoint.token)
        self.client = self.new_client(TIMEOUT)

    @property
    def available(self) -> bool:
        return bool(self.endpoint.proxy_url)

    def new_client(self, timeout: httpx.Timeout) -> httpx.Client:
        return httpx.Client(
            base_url=self.endpoint.proxy_url or "http://invalid", auth=self._auth, timeout=timeout,
            transport=self._http_transport,
        )  # fmt: skip

    def send(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = client.request(method, path, **kwargs)
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: a client closed under a request
            raise TransportError(f"HTTP {method} {path}: {type(exc).__name__}") from None
        if response.status_code == 401:
            raise TransportError("the pod API refused the job's token (HTTP 401)")
        if response.status_code >= 500:
            raise TransportError(f"HTTP {method} {path}: {response.status_code} (the pod is not serving yet?)")
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.send(self.client, method, path, **kwargs)
        if response.status_code >= 400:
            raise TransportError(f"HTTP {method} {path}: {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise TransportError(f"HTTP {method} {path}: not JSON (is this the pod API?)") from None

    def check(self) -> None:
        self._json("GET", "/status")

    def events(self, after_seq: int) -> EventFeed:
        return HttpFeed(self, after_seq)

    def read_log(self, offset: int) -> tuple[str, int]:
        response = self.send(self.client, "GET", "/logs", params={"offset": offset})
        if response.status_code == 416:
            return "", offset
        if response.status_code >= 400:
            raise TransportError(f"HTTP GET /logs: {response.status_code}")
        chunk = response.json()
        return str(chunk["data"]), int(chunk["next_offset"])

    def tail_pod_log(self, max_bytes: int = 4000) -> str:
        size = int(self._json("GET", "/logs", params={"offset": 0, "limit": 1}).get("size", 0))
        text, _ = self.read_log(max(0, size - max_bytes))
        return text

    def cancel(self, reason: str) -> None:
        self._json("POST", "/cancel", json={"reason": reason[:500]})

    def engine_exit(self) -> dict[str, Any] | None:
        found = self._json("GET", "/status").get("engine_exit")
        return found if isinstance(found, dict) else None

    def upload_input(self, source: Path, name: str, sha256: str) -> None:
        with source.open("rb") as body:
            response = self.send(
                self.client, "PUT", f"/inputs/{name}", content=body, headers={"X-Content-SHA256": sha256}
            )
        if response.status_code != 201:
            raise TransportError(f"HTTP PUT /inputs/{name}: {response.status_code} {response.text[:200]}")

    def deliver_secrets(self, folder: str, job_id: str, bootstrap: str, data: bytes) -> None:
        """The pod API's one-time ``PUT /secrets``: the pod token proves lorapod sends it, the bootstrap token
        names the attempt; a 409 means someone used that token first, and the pod is not to be trusted."""
        response = self.send(
            self.client, "PUT", "/secrets", content=data,
            headers={"X-Lorapod-Bootstrap": bootstrap, "Content-Type": "application/json"},
        )  # fmt: skip
        if response.status_code == 201:
            return
        if response.status_code in (403, 409):
            raise SecretsRefused(
                f"pod {self.endpoint.pod_id} refused this attempt's secrets (HTTP {response.status_code}): "
                "its one-time delivery was already used"
            )
        raise TransportError(f"HTTP PUT /secrets: {response.status_code}")

    def list_artifacts(self) -> list[dict[str, Any]]:
        for _ in range(HASH_RETRIES):
            listing = list(self._json("GET", "/artifacts").get("artifacts", []))
            if not any(item.get("sha256_pending") for item in listing):
                return listing
            time.sleep(2)  # a large package is still being hashed
        return listing

    def download_artifact(self, name: str, dest_dir: Path, sha256: str | None) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / name
        partial = target.with_name(name + ".partial")
        etag: str | None = None
        with open_download(partial) as local:
            start = local.seek(0, os.SEEK_END)
            while True:
                headers = {"Range": f"bytes={start}-{start + self.chunk_bytes - 1}"}
                if etag:
                    headers["If-Range"] = etag
                response = self.send(self.client, "GET", f"/artifacts/{name}", headers=headers)
                if response.status_code == 404:
                    raise ArtifactError(f"{name}: not in the pod's packages")
                if response.status_code == 416:
                    break  # everything is here
                if response.status_code == 200 and start > 0:  # the package changed: start again
                    local.seek(0)
                    local.truncate()
                elif response.status_code not in (200, 206):
                    raise TransportError(f"HTTP GET /artifacts/{name}: {response.status_code}")
                etag = response.headers.get("etag", etag)
                local.write(response.content)
                start = local.tell()
                total = _total_size(response)
                if response.status_code == 200 or (total is not None and start >= total):
                    break
        return finish_download(partial, target, sha256)

    def close(self) -> None:
        self.client.close()


def _total_size(response: httpx.Response) -> int | None:
    content_range = response.headers.get("content-range", "")
    try:
        return int(content_range.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None

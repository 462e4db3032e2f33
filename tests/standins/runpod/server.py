"""A local stand-in for RunPod: the REST API v1 subset lorapod uses, the GPU price query, and the HTTPS proxy.

Every REST request and response is validated against RunPod's published OpenAPI spec
(a copy in tests/fixtures/runpod-rest-v1.openapi.json) with openapi-core; a request that does not validate is answered
400 and every violation is kept in ``violations`` (the tests require none). Three things are adjusted in the
copy the stand-in loads, each because the published file cannot be used as is: it is not checked as a spec
(it repeats operationIds such as UpdatePod and gives ``ports`` a string default for an array); its server
is this stand-in's address; and each operation used gains a ``default`` response with the error body the
live API sends (``{"error": "...", "status": N}``), which the published file leaves undocumented.

Its pods (``tests.standins.runpod.pods``) are local processes running the real pod entrypoint. It can answer
"no capacity" for chosen GPU types, start pods slowly, run pods without a public IP, and kill a pod
(preemption). ``/proxy/{podId}-{port}/…`` forwards to a pod's API as ``https://{podId}-{port}.proxy.runpod.net``
does.
"""

from __future__ import annotations

import copy
import json
import secrets
import string
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from presets.gpus import catalogue
from tests.conftest import ROOT
from tests.standins.runpod.pods import StandInPod

SPEC = ROOT / "tests" / "fixtures" / "runpod-rest-v1.openapi.json"
NO_INSTANCES = (
    "create pod: There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
ERROR_BODY = {"type": "object", "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}}
USED = {
    ("/pods", "post"), ("/pods", "get"), ("/pods/{podId}", "get"), ("/pods/{podId}", "delete"),
    ("/networkvolumes/{networkVolumeId}", "get"),
}  # fmt: skip


def load_spec(server_url: str) -> OpenAPI:
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    spec["servers"] = [{"url": server_url}]
    for path, method in USED:
        responses = spec["paths"][path][method]["responses"]
        responses["default"] = {
            "description": "An error, as the live API answers it.",
            "content": {"application/json": {"schema": copy.deepcopy(ERROR_BODY)}},
        }
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


def _pod_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(14))


class RunPodStandIn:
    """The stand-in server and its pods. ``url`` is what lorapod's runpod_api_url points at."""

    def __init__(self, root: Path, api_key: str, *, calls_per_minute: int = 100) -> None:
        self.root = root
        self.api_key = api_key
        self.calls_per_minute = calls_per_minute
        self.no_capacity: set[str] = set()
        self.start_delay_s = 0.0
        self.public_ip = True
        self.env_overrides: dict[str, str] = {}
        self.volume_gb = 100  # every network volume's size unless volume_sizes names it
        self.volume_sizes: dict[str, int] = {}
        self.pods: dict[str, StandInPod] = {}
        self.deleted: dict[str, StandInPod] = {}
        self.requests: list[tuple[str, str, Any]] = []  # method, path, JSON body
        self.responses: list[tuple[str, str, str]] = []  # method, path, response body as text
        self.deletions: list[tuple[str, str]] = []  # pod id, "user" or "pod" (its own key)
        self.violations: list[str] = []
        self.graphql_queries: list[dict[str, Any]] = []
        self.proxied: list[tuple[str, str]] = []  # method, path behind the pod's proxy URL
        self._calls: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self.api = load_spec(f"{self.url}/v1")
        self._thread = threading.Thread(target=self._server.serve_forever, name="runpod-standin", daemon=True)

    # --- lifecycle and test controls -----------------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    @property
    def proxy_template(self) -> str:
        return self.url + "/proxy/{pod_id}-{port}"

    def start(self) -> RunPodStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        for pod in list(self.pods.values()):
            pod.stop("TERMINATED")
        self._server.shutdown()

    def preempt(self, pod_id: str) -> None:
        """Kill the pod as a host failure or a reclaimed interruptible pod would: it reports EXITED."""
        self.pods[pod_id].stop("EXITED")

    def only_pod(self) -> StandInPod:
        (pod,) = self.pods.values()
        return pod

    # --- WSGI --------------------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        path = request.path
        if path.startswith("/proxy/"):
            response = self._proxy(request)
        elif path == "/graphql":
            response = self._graphql(request)
        elif path.startswith("/v1/"):
            response = self._rest(request)
        else:
            response = Response("not found", status=404)
        return response(environ, start_response)

    def _rest(self, request: Request) -> Response:
        body = request.get_json(silent=True) if request.data else None
        with self._lock:
            self.requests.append((request.method, request.path, body))
        try:
            self.api.validate_request(WerkzeugOpenAPIRequest(request))
        except Exception as exc:
            self.violations.append(f"request {request.method} {request.path}: {exc}")
            response = _error(400, f"invalid request: {exc}")
        else:
            response = self._route(request, body)
        try:
            self.api.validate_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(response))
        except Exception as exc:
            self.violations.append(f"response {request.method} {request.path} {response.status_code}: {exc}")
        with self._lock:
            self.responses.append((request.method, request.path, response.get_data(as_text=True)))
        return response

    def _route(self, request: Request, body: Any) -> Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        pod_owner = next((p for p in self.pods.values() if p.pod_key == token), None)
        refused = self._gate(token, pod_owner)
        if refused is not None:
            return refused
        parts = request.path.removeprefix("/v1/").split("/")
        method = request.method
        own_pod_only = pod_owner is not None and (len(parts) != 2 or parts[1] != pod_owner.id)
        if own_pod_only or (pod_owner is not None and method not in ("GET", "DELETE")):
            return _error(403, "this key is scoped to its own pod")
        if parts[0] == "networkvolumes":
            return self._volume(parts[-1])
        if parts == ["pods"]:
            return self._create(body or {}) if method == "POST" else self._list(request.args.get("name"))
        pod = self.pods.get(parts[1]) if len(parts) == 2 else None
        if pod is None:
            return _error(404, "pod not found")
        return self._delete(pod, pod_owner is not None) if method == "DELETE" else _json(pod.record())

    def _delete(self, pod: StandInPod, by_itself: bool) -> Response:
        self.deletions.append((pod.id, "pod" if by_itself else "user"))
        with self._lock:
            self.pods.pop(pod.id, None)
            self.deleted[pod.id] = pod
        # The answer goes out first: a pod deleting itself is stopped right after.
        threading.Timer(0.2, pod.stop, args=("TERMINATED",)).start()
        return Response(status=204)

    def _gate(self, token: str, pod_owner: StandInPod | None) -> Response | None:
        if token != self.api_key and pod_owner is None:
            return _error(401, "Unauthorized: invalid API key")
        if self._over_budget(token):
            return _error(429, "too many requests", headers={"Retry-After": "1"})
        return None

    def _volume(self, volume_id: str) -> Response:
        """GET /networkvolumes/{id}: the only volume call lorapod makes (the spec refuses any other)."""
        size = self.volume_sizes.get(volume_id, self.volume_gb)
        return _json({"id": volume_id, "name": "stand-in volume", "size": size, "dataCenterId": "EU-RO-1"})

    def _list(self, name: str | None) -> Response:
        return _json([p.record() for p in self.pods.values() if name is None or p.name == name])

    def _over_budget(self, token: str) -> bool:
        with self._lock:
            calls, now = self._calls[token], time.monotonic()
            while calls and now - calls[0] >= 60:
                calls.popleft()
            if len(calls) >= self.calls_per_minute:
                return True
            calls.append(now)
            return False

    def _create(self, body: dict[str, Any]) -> Response:
        asked = list(body.get("gpuTypeIds") or [])
        gpu = next((g for g in asked if g not in self.no_capacity), None)
        if gpu is None:
            return _error(500, NO_INSTANCES)
        known = catalogue().find(gpu)
        cloud = str(body.get("cloudType", "SECURE"))
        price = (known.price(cloud) if known else 1.0) * int(body.get("gpuCount", 1))
        pod_id = _pod_id()
        volume_id = body.get("networkVolumeId")
        folder = self.root / "pods" / pod_id
        pod = StandInPod(
            id=pod_id,
            name=str(body.get("name", "")),
            body=body,
            gpu=gpu,
            cost_per_hr=round(price, 3),
            folder=folder,
            mount=Path(str(body.get("volumeMountPath", "/workspace"))),
            volume=self.root / "volumes" / volume_id if volume_id else folder / "volume",
            public_ip=self.public_ip,
            env_overrides=dict(self.env_overrides),
        )
        with self._lock:
            self.pods[pod_id] = pod
        pod.start(self.start_delay_s)
        return _json(pod.record(), status=201)

    # --- the price query and the proxy ---------------------------------------------------------------------

    def _graphql(self, request: Request) -> Response:
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            return _json({"errors": [{"message": "Unauthorized"}]}, status=401)
        payload = request.get_json(silent=True) or {}
        self.graphql_queries.append(payload)
        wanted = ((payload.get("variables") or {}).get("input") or {}).get("id")
        gpus = [g for g in catalogue().gpu if wanted in (None, g.id)]
        data = [
            {"id": g.id, "displayName": g.label, "securePrice": round(g.secure * 0.9, 2),
             "communityPrice": round(g.community * 0.9, 2)}
            for g in gpus
        ]  # fmt: skip
        return _json({"data": {"gpuTypes": data}})

    def _proxy(self, request: Request) -> Response:
        target, _, rest = request.path.removeprefix("/proxy/").partition("/")
        pod_id, _, port = target.rpartition("-")
        self.proxied.append((request.method, f"/{rest}"))
        pod = self.pods.get(pod_id)
        if pod is None or not pod.ready or port != "8000":
            return Response("no such pod behind the proxy", status=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        client = httpx.Client(timeout=httpx.Timeout(120.0, connect=5.0))
        try:
            upstream = client.send(
                client.build_request(
                    request.method, f"http://127.0.0.1:{pod.api_port}/{rest}", params=request.args.to_dict(),
                    headers=headers, content=request.get_data(),
                ),
                stream=True,
            )  # fmt: skip
        except httpx.HTTPError:
            client.close()
            return Response("502 Bad Gateway: the pod is not answering on this port", status=502)

        def body() -> Iterator[bytes]:
            try:
                yield from upstream.iter_raw()
            finally:
                upstream.close()
                client.close()

        passed = [(k, v) for k, v in upstream.headers.items() if k.lower() not in ("transfer-encoding", "connection")]
        return Response(body(), status=upstream.status_code, headers=passed, direct_passthrough=True)


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, mimetype="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = _json({"error": message, "status": status}, status=status)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response

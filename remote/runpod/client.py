"""RunPod's REST API v1 (the pods it uses) over httpx: typed errors, a rate budget, and backoff.

RunPod allows about 100 calls a minute; the client spends at most ``CALLS_PER_MINUTE`` and backs off on 429
(honouring Retry-After). The API key travels only in the Authorization header: it is in no URL, message,
exception or repr, and is scrubbed from any text RunPod sends back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

import httpx

from remote.runpod.errors import BadApiKey, BalanceTooLow, PodNotFound, RateLimited, RunPodError

log = logging.getLogger(__name__)

CALLS_PER_MINUTE = 90
RETRIES = 5
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# How RunPod words "nothing free for this request" (REST and GraphQL alike).
_NO_CAPACITY = re.compile(
    r"no longer any instances|no instances? (are )?available|not enough free gpus|no gpus? available|"
    r"could not find any pods with required specifications|out of capacity|insufficient capacity",
    re.I,
)
_BALANCE = re.compile(r"balance|insufficient funds|credits?\b|quota|spend(ing)? limit", re.I)


class NoInstances(RunPodError):
    """This request's GPU type has no machine free (the provider goes on to the next type)."""


class ApiKey(httpx.Auth):
    """A bearer token that never shows itself: not in repr, str or logs."""

    def __init__(self, key: str) -> None:
        if not key.strip():
            raise BadApiKey("no RunPod API key: set RUNPOD_API_KEY or run `runpodctl config --apiKey …`")
        self.__key = key.strip()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.__key}"
        yield request

    def scrub(self, text: str) -> str:
        return text.replace(self.__key, "<redacted>") if self.__key else text

    def __repr__(self) -> str:
        return "ApiKey(<redacted>)"

    __str__ = __repr__


class CallBudget:
    """At most ``per_minute`` calls in any 60 seconds: a caller over budget waits for the oldest to age out."""

    def __init__(self, per_minute: int = CALLS_PER_MINUTE, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    def wait_time(self) -> float:
        with self._lock:
            now = self.clock()
            while self._calls and now - self._calls[0] >= 60:
                self._calls.popleft()
            if len(self._calls) < self.per_minute:
                self._calls.append(now)
                return 0.0
            return 60 - (now - self._calls[0])


class RestClient:
    """The pods part of RunPod's REST API: create, get, list, delete."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        budget: CallBudget | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._auth = ApiKey(api_key)
        self._http = httpx.Client(base_url=self.api_url, auth=self._auth, timeout=TIMEOUT, transport=transport)
        self._sleep = sleep
        self._budget = budget or CallBudget()

    def __repr__(self) -> str:
        return f"RestClient({self.api_url!r})"

    def close(self) -> None:
        self._http.close()

    # --- pods -------------------------------------------------------------------------------------------

    def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a pod; NoInstances when its GPU type has no machine free."""
        try:
            response = self._request("POST", "/pods", json=body, retry_server_errors=False)
        except RunPodError as exc:
            if isinstance(exc, _ServerError):
                # RunPod has created pods and then failed its own read-back: look before giving up.
                found = self.list_pods(name=str(body.get("name", "")))
                if found:
                    log.warning("creating the pod answered %s, but pod %s exists: using it", exc, found[-1]["id"])
                    return found[-1]
            raise
        return _json_object(response)

    def get_pod(self, pod_id: str) -> dict[str, Any] | None:
        """The pod, or None when RunPod no longer knows it."""
        try:
            return _json_object(self._request("GET", f"/pods/{pod_id}"))
        except PodNotFound:
            return None

    def list_pods(self, *, name: str | None = None) -> list[dict[str, Any]]:
        params = {"name": name} if name else None
        data = self._request("GET", "/pods", params=params).json()
        if not isinstance(data, list):
            raise RunPodError("RunPod's pod list was not a list")
        return [pod for pod in data if isinstance(pod, dict)]

    def delete_pod(self, pod_id: str) -> bool:
        """Delete (terminate) a pod; False when it was already gone."""
        try:
            self._request("DELETE", f"/pods/{pod_id}")
        except PodNotFound:
            return False
        return True

    def get_network_volume(self, volume_id: str) -> dict[str, Any] | None:
        """The network volume (its ``size`` in GB), or None when RunPod has no such volume."""
        try:
            return _json_object(self._request("GET", f"/networkvolumes/{volume_id}"))
        except PodNotFound:  # the client's 404
            return None

    # --- transport --------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, retry_server_errors: bool = True, **kwargs: Any) -> httpx.Response:
        failures = 0
        while True:
            wait = self._budget.wait_time()
            if wait > 0:
                log.info("RunPod call budget spent: waiting %.1f s", wait)
                self._sleep(wait)
                continue
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                failures += 1
                if failures > RETRIES or method == "POST":
                    raise RunPodError(f"cannot reach RunPod's API at {self.api_url}: {type(exc).__name__}") from None
                self._sleep(_backoff(failures))
                continue
            if response.status_code == 429:
                failures += 1
                if failures > RETRIES:
                    raise RateLimited(
                        "RunPod keeps answering 429 (too many requests, about 100 a minute are allowed); "
                        "another program may be using the same key — try again in a minute"
                    )
                self._sleep(_retry_after(response) or _backoff(failures))
                continue
            if response.status_code >= 500 and retry_server_errors and failures < RETRIES:
                failures += 1
                self._sleep(_backoff(failures))
                continue
            if response.status_code >= 400:
                raise self._error(response, method, path)
            return response

    def _error(self, response: httpx.Response, method: str, path: str) -> RunPodError:
        status = response.status_code
        message = self._auth.scrub(_message(response))
        where = f"{method} {path}"
        if status in (401, 403):
            return BadApiKey(
                f"RunPod refused the API key (HTTP {status} on {where}): check RUNPOD_API_KEY or "
                f"~/.runpod/config.toml, and that the key has read/write access{_detail(message)}"
            )
        if status == 404:
            return PodNotFound(f"RunPod has no such pod ({where}){_detail(message)}")
        if _NO_CAPACITY.search(message):
            return NoInstances(message)
        if _BALANCE.search(message):
            return BalanceTooLow(
                f"RunPod refused a new pod for the account's balance or quota: {message} — add credit or raise "
                "the limit in the RunPod console"
            )
        if status >= 500:
            return _ServerError(f"RunPod answered HTTP {status} on {where}{_detail(message)}")
        return RunPodError(f"RunPod refused {where} (HTTP {status}){_detail(message)}")


class _ServerError(RunPodError):
    """HTTP 5xx."""


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise RunPodError(f"RunPod answered HTTP {response.status_code} with something that is not JSON") from None
    if not isinstance(data, dict):
        raise RunPodError("RunPod's answer was not a JSON object")
    return data


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str):
                return str(data[key])[:300]
    return str(data)[:300]


def _detail(message: str) -> str:
    return f": {message}" if message else ""


def _backoff(failures: int) -> float:
    return float(min(2 ** (failures - 1), 30))


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers.get("retry-after", "")), 60.0)
    except ValueError:
        return None

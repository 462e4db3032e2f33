"""The RunPod REST client, the price query and the event failover, against httpx.MockTransport and fakes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import presets
from engine.config import JobSpec
from presets.gpus import catalogue
from remote.provider import ProviderError, RunHandle, RunState
from remote.runpod import RunPodProvider
from remote.runpod.client import CallBudget, NoInstances, RestClient
from remote.runpod.errors import BadApiKey, BalanceTooLow, NoCapacity, RateLimited, RunPodError, TransportError
from remote.runpod.pods import PodInfo, create_request, job_id_from_name, pod_name
from remote.runpod.prices import PRICE_QUERY, fetch_prices, refresh_prices
from remote.runpod.transport import EventFeed, FailoverFeed, Link, PodEndpoint, PodTransport
from store.costs import find_gpu, gpu_price, live_prices
from store.host_keys import Pin
from store.settings import Settings

KEY = "rpa_SECRET_0123456789abcdef"
POD = {"id": "abc123", "name": "lorapod-x", "desiredStatus": "RUNNING", "costPerHr": 2.69}

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, sleeps: list[float] | None = None) -> RestClient:
    waits = sleeps if sleeps is not None else []
    return RestClient("https://rest.example/v1", KEY, transport=httpx.MockTransport(handler), sleep=waits.append)


def spec(*overrides: str) -> JobSpec:
    return presets.get("balanced").to_spec("data.json", ["provider=runpod", *overrides])


def test_requests_carry_the_key_as_a_bearer_token_and_nowhere_else() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=POD)

    rest = client(handler)
    assert rest.get_pod("abc123") == POD
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(seen[0].url)
    assert KEY not in repr(rest) and KEY not in repr(rest._auth) and KEY not in str(rest._auth)


def test_a_bad_key_says_so_without_showing_it() -> None:
    rest = client(lambda r: httpx.Response(401, json={"error": f"invalid api key {KEY}", "status": 401}))
    with pytest.raises(BadApiKey) as caught:
        rest.list_pods()
    assert "RUNPOD_API_KEY" in str(caught.value)
    assert KEY not in str(caught.value) and "<redacted>" in str(caught.value)


def test_errors_are_told_apart_by_what_runpod_says() -> None:
    no_gpu = "There are no longer any instances available with the requested specifications."
    with pytest.raises(NoInstances):
        client(lambda r: httpx.Response(500, json={"error": no_gpu, "status": 500})).create_pod({"name": "n"})
    with pytest.raises(BalanceTooLow, match="add credit"):
        client(lambda r: httpx.Response(400, json={"error": "Insufficient balance", "status": 400})).create_pod({})
    with pytest.raises(RunPodError, match="HTTP 400"):
        client(lambda r: httpx.Response(400, json={"error": "bad imageName", "status": 400})).create_pod({})
    assert client(lambda r: httpx.Response(404, json={"error": "not found"})).get_pod("gone") is None
    assert client(lambda r: httpx.Response(404)).delete_pod("gone") is False


def test_rate_limits_back_off_honouring_retry_after_then_give_up_clearly() -> None:
    answers = iter(
        [httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(429), httpx.Response(200, json=[])]
    )
    sleeps: list[float] = []
    assert client(lambda r: next(answers), sleeps).list_pods() == []
    assert sleeps == [3.0, 2.0]

    sleeps = []
    with pytest.raises(RateLimited, match="100 a minute"):
        client(lambda r: httpx.Response(429), sleeps).list_pods()
    assert len(sleeps) == 5


def test_the_call_budget_keeps_under_runpods_limit() -> None:
    now = [0.0]
    budget = CallBudget(per_minute=3, clock=lambda: now[0])
    assert [budget.wait_time() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.wait_time() == pytest.approx(60.0)
    now[0] = 59.0
    assert budget.wait_time() == pytest.approx(1.0)
    now[0] = 60.0
    assert budget.wait_time() == 0.0


def test_a_pod_created_despite_a_server_error_is_found_by_name_not_created_twice() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if request.method == "POST":
            return httpx.Response(500, json={"error": "read-back failed", "status": 500})
        assert request.url.params["name"] == "lorapod-x"
        return httpx.Response(200, json=[POD])

    assert client(handler).create_pod({"name": "lorapod-x"})["id"] == "abc123"
    assert calls == ["POST", "GET"]  # POST is never repeated on its own


def test_pod_names_mark_lorapods_pods_with_the_job_id() -> None:
    job = uuid.uuid4()
    assert job_id_from_name(pod_name(job)) == job
    assert job_id_from_name("my-notebook") is None and job_id_from_name("lorapod-nope") is None


def test_the_create_request_asks_for_what_the_spec_says() -> None:
    job = uuid.uuid4()
    body = create_request(
        job_id=job, spec=spec("cloud_type=COMMUNITY", "gpu_count=2", "container_disk_gb=80"), gpu_type="NVIDIA H200",
        image="img:1", env={"A": "b"}, network_volume_id="vol1", volume_mount_path="/workspace",
    )  # fmt: skip
    assert body["name"] == f"lorapod-{job}" and body["gpuTypeIds"] == ["NVIDIA H200"]
    assert (body["gpuCount"], body["cloudType"], body["containerDiskInGb"]) == (2, "COMMUNITY", 80)
    assert body["ports"] == ["22/tcp", "8000/http"] and body["volumeMountPath"] == "/workspace"
    assert body["networkVolumeId"] == "vol1" and body["supportPublicIp"] is True
    assert "interruptible" not in body  # only when asked
    asked = create_request(
        job_id=job, spec=spec("interruptible=true"), gpu_type="NVIDIA H200", image="i", env={},
        network_volume_id=None, volume_mount_path="/workspace",
    )  # fmt: skip
    assert asked["interruptible"] is True and "networkVolumeId" not in asked


def test_pod_records_parse_whether_starting_or_running() -> None:
    starting = PodInfo.parse({"id": "p", "name": "lorapod-x", "desiredStatus": "RUNNING", "publicIp": ""})
    assert starting.public_ip is None and starting.ssh_port is None and not starting.ssh_ready
    running = PodInfo.parse({**POD, "publicIp": "203.0.113.7", "portMappings": {"22": 10341}, "costPerHr": "0.74"})
    assert running.ssh_ready and running.ssh_port == 10341 and running.cost_per_hr == 0.74


def test_no_capacity_names_the_gpus_tried_in_order() -> None:
    message = str(NoCapacity(["NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL"], "SECURE", 1))
    assert "NVIDIA H100 80GB HBM3, NVIDIA H100 NVL" in message and "SECURE" in message


# --- prices -------------------------------------------------------------------------------------------------


def test_the_price_query_sends_ids_as_variables_and_feeds_the_cost_model(tmp_path: Path) -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        gpu = body["variables"]["input"]["id"]
        return httpx.Response(
            200, json={"data": {"gpuTypes": [{"id": gpu, "securePrice": 1.5, "communityPrice": 1.1}]}}
        )

    odd = 'NVIDIA "H100"'  # a quote breaks the SDK's pasted queries; variables carry it intact
    prices = fetch_prices("https://api.example/graphql", KEY, [odd], transport=httpx.MockTransport(handler))
    assert prices == {odd: {"secure": 1.5, "community": 1.1}}
    assert bodies[0]["query"] == PRICE_QUERY and odd not in bodies[0]["query"]

    settings = Settings()
    h100 = find_gpu("NVIDIA H100 80GB HBM3")
    assert gpu_price(h100, "SECURE", settings)[1].startswith("catalogue")
    transport = httpx.MockTransport(handler)
    refresh_prices(settings.paths.cache_dir, "https://api.example/graphql", KEY, [h100.id], transport=transport)
    assert gpu_price(h100, "SECURE", settings) == (1.5, gpu_price(h100, "SECURE", settings)[1])
    assert gpu_price(h100, "COMMUNITY", settings)[0] == 1.1
    assert "RunPod price query" in gpu_price(h100, "SECURE", settings)[1]
    cached = live_prices(settings.paths.cache_dir)
    assert cached is not None and KEY not in (settings.paths.cache_dir / "runpod-gpu-prices.json").read_text()

    before = len(bodies)
    refresh_prices(settings.paths.cache_dir, "https://api.example/graphql", KEY, [h100.id], transport=transport)
    assert len(bodies) == before  # fresh enough: not asked again


def test_a_failed_price_query_keeps_the_catalogue(tmp_path: Path) -> None:
    settings = Settings()
    refresh_prices(
        settings.paths.cache_dir, "https://api.example/graphql", KEY, ["NVIDIA H200"],
        transport=httpx.MockTransport(lambda r: httpx.Response(503)),
    )  # fmt: skip
    h200 = catalogue().find("NVIDIA H200")
    assert h200 is not None
    assert gpu_price(h200, "SECURE", settings) == (h200.secure, gpu_price(h200, "SECURE", settings)[1])


# --- events across reconnects and a change of transport ------------------------------------------------------


class ScriptedFeed(EventFeed):
    """Serves events 1..N from a shared log; drops the connection after ``cut_every`` events."""

    def __init__(self, source: FakeTransport, after_seq: int) -> None:
        self.source = source
        super().__init__(after_seq)

    def follow(self, after_seq: int) -> Iterator[dict[str, Any]]:
        if self.source.down:
            raise TransportError(f"{self.source.name} down")
        self.mark_alive()
        sent = 0
        for event in list(self.source.log):
            if event["seq"] > after_seq:
                # A reconnect may replay an event already queued: the feed must drop it.
                yield event
                sent += 1
                if sent == self.source.cut_every:
                    raise TransportError("connection cut")
        time.sleep(0.01)


class FakeTransport(PodTransport):
    def __init__(self, name: str, log: list[dict[str, Any]], cut_every: int) -> None:
        super().__init__(PodEndpoint("pod", "/w", "t", None, None, None))
        self.name = name  # type: ignore[misc]
        self.log = log
        self.cut_every = cut_every
        self.down = False

    available = True

    def events(self, after_seq: int) -> EventFeed:
        return ScriptedFeed(self, after_seq)

    def check(self) -> None: ...
    def read_log(self, offset: int) -> tuple[str, int]:
        return "", offset

    def tail_pod_log(self, max_bytes: int = 4000) -> str:
        return ""

    def cancel(self, reason: str) -> None: ...
    def engine_exit(self) -> dict[str, Any] | None:
        return None

    def upload_input(self, source: Path, name: str, sha256: str) -> None: ...

    def deliver_secrets(self, folder: str, job_id: str, bootstrap: str, data: bytes) -> None: ...
    def list_artifacts(self) -> list[dict[str, Any]]:
        return []

    def download_artifact(self, name: str, dest_dir: Path, sha256: str | None) -> Path:
        return dest_dir


def test_events_survive_reconnects_and_a_switch_of_transport_without_loss_or_duplicates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import remote.runpod.transport as transport_module

    monkeypatch.setattr(transport_module, "FAILING_AFTER_S", 0.3)
    monkeypatch.setattr(transport_module, "BACKOFF_START_S", 0.01)
    log: list[dict[str, Any]] = []
    ssh, http = FakeTransport("ssh", log, cut_every=3), FakeTransport("http", log, cut_every=5)
    feed = FailoverFeed([ssh, http], after_seq=0)
    received: list[int] = []
    writer_done = threading.Event()

    def write() -> None:
        for seq in range(1, 201):
            log.append({"seq": seq, "type": "metrics"})
            if seq == 80:
                ssh.down = True  # SSH goes away for good: the failover moves to HTTP
            time.sleep(0.002)
        writer_done.set()

    threading.Thread(target=write, daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not writer_done.is_set() or (received and received[-1] < 200)):
        received += [e["seq"] for e in feed.poll(0.05)]
    feed.close()
    assert received == list(range(1, 201))
    assert feed.switches >= 1 and feed.transport == "http"


class NoPins:
    def get(self, host: str, port: int) -> Pin | None:
        return None

    def pin(self, pin: Pin) -> Pin:
        return pin

    def forget(self, host: str, port: int) -> bool:
        return False


def test_the_provider_reads_a_pods_state_from_runpod_and_waits_out_an_outage() -> None:
    answers: dict[str, httpx.Response] = {}
    rest = client(lambda request: answers[request.url.path.rsplit("/", 1)[-1]])
    provider = RunPodProvider(Settings(runpod_api_key=KEY), NoPins(), rest=rest)
    assert KEY not in repr(provider)

    def state(pod_id: str) -> RunState:
        return provider.state(RunHandle(provider="runpod", job_id="j", workdir="/w", pod_id=pod_id))

    answers["down"] = httpx.Response(503, json={"error": "upstream unavailable", "status": 503})
    answers["gone"] = httpx.Response(404, json={"error": "pod not found", "status": 404})
    answers["stopped"] = httpx.Response(200, json={**POD, "id": "stopped", "desiredStatus": "EXITED"})
    assert state("down") is RunState.RUNNING  # not known to be gone: keep following
    assert state("gone") is RunState.LOST
    assert state("stopped") is RunState.LOST


def test_threads_asking_at_once_for_one_pods_link_share_a_single_link(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's workers and the follower reach one pod together: one link (one SSH connection) serves all."""
    provider = RunPodProvider(Settings(runpod_api_key=KEY), NoPins(), rest=client(lambda r: httpx.Response(200)))
    made: list[str] = []

    def slow_make(pod: PodInfo, workdir: str, token: str) -> Link:
        made.append(pod.id)
        time.sleep(0.2)  # a first link in the making while the others ask
        return Link([FakeTransport("http", [], cut_every=0)])

    monkeypatch.setattr(provider.links, "make", slow_make)
    handle = RunHandle(provider="runpod", job_id="j", workdir="/w", pod_id="abc123")
    start = threading.Barrier(4)

    def read_log() -> None:
        start.wait()
        assert provider.logs(handle) == ("", 0)

    threads = [threading.Thread(target=read_log) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert made == ["abc123"]


def test_a_gpu_the_cost_model_does_not_know_is_refused_before_any_pod_is_made() -> None:
    """Its hourly rate is unknown: a pod must never run costed at $0/h, out of the budget's sight."""
    requests: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append((request.method, request.url.path))
        if request.method == "GET":
            return httpx.Response(200, json=[])  # no earlier pods of the job
        return httpx.Response(400, json={"error": "no pod in this test", "status": 400})

    settings = Settings(runpod_api_key=KEY, runpod_image="lorapod:test")
    provider = RunPodProvider(settings, NoPins(), rest=client(handler))
    with pytest.raises(ProviderError, match=r"unknown GPU 'NVIDIA Imaginary 99GB'.*known: NVIDIA H100"):
        provider.launch(uuid.uuid4(), spec("gpu_types=NVIDIA Imaginary 99GB"))
    assert [path for method, path in requests if method == "POST"] == []


def test_a_pod_without_a_billed_rate_costs_the_catalogue_price_of_the_gpu_it_runs_on() -> None:
    provider = RunPodProvider(Settings(runpod_api_key=KEY), NoPins(), rest=client(lambda r: httpx.Response(200)))
    job = spec("gpu_types=NVIDIA H100 80GB HBM3,NVIDIA A100 80GB PCIe", "gpu_count=2")
    on_a100 = RunHandle(
        provider="runpod", job_id="j", workdir="/w", pod_id="abc123",
        extra={"gpu_type": "NVIDIA A100 80GB PCIe", "cost_per_hr": None},
    )  # fmt: skip
    a100, _ = gpu_price(find_gpu("NVIDIA A100 80GB PCIe"), "SECURE", provider.settings)
    h100, _ = gpu_price(find_gpu("NVIDIA H100 80GB HBM3"), "SECURE", provider.settings)
    assert a100 > 0 and a100 != h100
    assert provider.rate_usd_per_hour(on_a100, job) == pytest.approx(2 * a100)
    billed = on_a100.model_copy(update={"extra": {**on_a100.extra, "cost_per_hr": 3.38}})
    assert provider.rate_usd_per_hour(billed, job) == 3.38
    on_unknown = on_a100.model_copy(update={"extra": {"gpu_type": "NVIDIA Imaginary 99GB"}})
    assert provider.rate_usd_per_hour(on_unknown, job) == pytest.approx(2 * h100)  # the first GPU asked for

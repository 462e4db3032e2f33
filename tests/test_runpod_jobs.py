"""RunPod jobs end to end on the stand-in: real pods (the pod entrypoint, sshd, the pod API, the engine on
CPU), driven through the lorapod command line as a user would."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import ROOT
from tests.engine_helpers import SAMPLE, wait_for
from tests.runpod_helpers import (
    API_KEY,
    SMOKE,
    Cluster,
    demo_cluster,
    final_loss,
    ledger_rows,
    lorapod,
    only_job,
    process_environment,
    show,
    spawn,
)
from tests.standins.runpod.pods import StandInPod, kill_tree

pytestmark = pytest.mark.slow
__all__ = ["demo_cluster"]  # the module's stand-in RunPod (a fixture)

# A quote and a newline inside values that travel to the pod in its environment.
ODD_NAME = 'say "hi"\nthen train'
ODD_TOKEN = 'hf_"quoted"\nsecond-line'


@pytest.fixture(autouse=True)
def ordinary(cluster: Cluster) -> Iterator[None]:
    cluster.reset()
    yield
    assert cluster.standin.violations == []


@dataclass
class Finished:
    home: Path
    env: dict[str, str]
    job: dict[str, Any]
    stdout: str
    stderr: str
    returncode: int
    pod: StandInPod
    pod_environment: dict[str, str]
    engine_environment: dict[str, str]
    reconnected: bool


def _job_process(pod: StandInPod) -> psutil.Process | None:
    if pod.process is None:
        return None
    try:
        children = psutil.Process(pod.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    return next((c for c in children if "engine pod" in _command_line(c)), None)


def _engine_process(pod: StandInPod) -> psutil.Process | None:
    job = _job_process(pod)
    try:
        children = job.children() if job is not None else []
    except psutil.NoSuchProcess:
        return None
    return next((c for c in children if "engine run" in _command_line(c)), None)


def _command_line(process: psutil.Process) -> str:
    """The process's command line; empty when it has already exited (the entrypoint runs short-lived commands)."""
    try:
        return " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return ""


def _drop_ssh_connections(pod: StandInPod) -> bool:
    """Cut the pod's live SSH connections (not sshd itself): followers must reconnect."""
    listener = psutil.Process(int((pod.folder / "sshd.pid").read_text()))
    connections = listener.children()
    for connection in connections:
        kill_tree(connection.pid)
    return bool(connections)


@pytest.fixture(scope="module")
def over_ssh(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Finished:
    """One whole job over SSH, followed live by `lorapod run`; its SSH connection is cut once mid-training."""
    home = tmp_path_factory.mktemp("ssh-home")
    env = cluster.env(home, HF_TOKEN=ODD_TOKEN)
    process = spawn("run", *SMOKE, "--name", ODD_NAME, env=env)
    pod = wait_for(lambda: next(iter(cluster.standin.pods.values()), None), timeout=60)
    job_process = wait_for(lambda: _job_process(pod), timeout=60)
    environment = process_environment(job_process.pid)
    job_id = pod.name.removeprefix("lorapod-")
    wait_for(lambda: any(e["type"] == "metrics" and e["step"] >= 3 for e in cluster.events(job_id)), timeout=120)
    engine_environment = process_environment(wait_for(lambda: _engine_process(pod), timeout=30).pid)
    reconnected = _drop_ssh_connections(pod)
    stdout, stderr = process.communicate(timeout=300)
    return Finished(
        home, env, only_job(env), stdout, stderr, process.returncode, pod, environment, engine_environment,
        reconnected,
    )  # fmt: skip


def test_a_job_runs_over_ssh_with_its_events_metrics_and_packages_and_its_pod_is_deleted(
    cluster: Cluster, over_ssh: Finished, tmp_path: Path
) -> None:
    run, env, job = over_ssh, over_ssh.env, over_ssh.job["short_id"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "stage: training" in run.stdout and "completed" in run.stdout
    details = show(job, env)
    assert details["status"] == "completed" and details["provider"] == "runpod"
    assert [a["outcome"] for a in details["attempts"]] == ["completed"]
    assert details["cost"]["actual_usd"] > 0
    # Every event of the pod's events.jsonl is in the ledger exactly once, although SSH was cut mid-run.
    assert run.reconnected
    events = cluster.events(details["id"])
    hex_id = details["id"].replace("-", "")
    seqs = [
        row[0] for row in ledger_rows(run.home, f"select seq from job_events where job_id = '{hex_id}' order by seq")
    ]
    assert seqs == [e["seq"] for e in events] and seqs[-1] == len(seqs)
    metric_steps = {e["step"] for e in events if e["type"] == "metrics"}
    assert ledger_rows(run.home, "select count(*) from training_metrics_history") == [(len(metric_steps),)]
    assert {a["kind"] for a in details["artifacts"]} == {"adapter", "full", "deploy"}
    # The pod is gone, deleted by the supervisor once it had the results; they are still at hand here.
    assert run.pod.id in cluster.standin.deleted and (run.pod.id, "user") in cluster.standin.deletions
    downloaded = lorapod("download", job, "--package", "deploy", "-o", str(tmp_path / "out"), env=env)
    assert downloaded.returncode == 0 and "sha256 verified" in downloaded.stdout, downloaded.stderr
    logs = lorapod("logs", job, env=env)
    assert logs.returncode == 0 and "stage: completed" in logs.stdout
    # Over SSH: lorapod's key logged in, the host key is pinned, and the pod API was not asked for events.
    assert "Accepted publickey" in (cluster.workdir(details["id"]) / "logs" / "pod.log").read_text()
    assert ledger_rows(run.home, "select host, port from host_keys") == [("127.0.0.1", run.pod.ssh_port)]
    assert not [path for _, path in cluster.standin.proxied if path.startswith("/events")]
    assert ledger_rows(run.home, "select gpu_type from training_jobs") == [("NVIDIA H100 80GB HBM3",)]


def test_a_quote_and_a_newline_in_environment_values_arrive_intact(cluster: Cluster, over_ssh: Finished) -> None:
    # The token is delivered after the pod starts: the engine's process has it, the pod's own env never did.
    assert over_ssh.engine_environment["HF_TOKEN"] == ODD_TOKEN
    assert "HF_TOKEN" not in over_ssh.pod_environment and "LORAPOD_POD_TOKEN" not in over_ssh.pod_environment
    assert "LORAPOD_BOOTSTRAP_TOKEN" not in over_ssh.engine_environment
    spec = json.loads(over_ssh.pod_environment["LORAPOD_SPEC"])
    assert spec["name"] == ODD_NAME
    details = show(over_ssh.job["short_id"], over_ssh.env)
    kept = json.loads((cluster.workdir(details["id"]) / "spec.json").read_text())
    assert kept["name"] == ODD_NAME == details["name"]


def test_the_api_key_appears_nowhere_in_logs_the_ledger_or_the_pod(cluster: Cluster, over_ssh: Finished) -> None:
    places = [
        *over_ssh.home.rglob("*"),
        *cluster.workdir(over_ssh.job["id"]).rglob("*"),
        *over_ssh.pod.folder.rglob("*"),
    ]
    files = [path for path in places if path.is_file() and not path.is_symlink()]
    assert any(path.name == "ledger.sqlite" for path in files) and any(path.name == "pod.log" for path in files)
    leaks = [path for path in files if API_KEY.encode() in path.read_bytes()]
    assert leaks == []
    assert API_KEY not in over_ssh.stdout + over_ssh.stderr
    assert API_KEY not in json.dumps(over_ssh.pod_environment)  # the pod has its own, pod-scoped key
    assert over_ssh.pod_environment["RUNPOD_API_KEY"] == over_ssh.pod.pod_key
    bodies = [json.dumps(body) for method, _, body in cluster.standin.requests if method == "POST"]
    assert bodies and not [body for body in bodies if API_KEY in body]


def test_a_job_runs_over_http_alone_on_a_pod_without_public_ip(cluster: Cluster, tmp_path: Path) -> None:
    cluster.standin.public_ip = False
    cluster.standin.start_delay_s = 3.0  # the image is pulled slowly
    env = cluster.env(tmp_path / "home")
    proxied_before = len(cluster.standin.proxied)
    result = lorapod("run", *SMOKE, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    details = show(only_job(env)["short_id"], env)
    assert details["status"] == "completed"
    events = cluster.events(details["id"])
    hex_id = details["id"].replace("-", "")
    seqs = [r[0] for r in ledger_rows(tmp_path / "home", f"select seq from job_events where job_id = '{hex_id}'")]
    assert sorted(seqs) == [e["seq"] for e in events]
    (pod,) = cluster.job_pods(details["id"])
    assert pod.id in cluster.standin.deleted
    proxied = [path for _, path in cluster.standin.proxied[proxied_before:]]
    assert any(p.startswith("/events") for p in proxied) and any(p.startswith("/inputs/") for p in proxied)
    assert any(p.startswith("/artifacts/") for p in proxied)
    assert "Accepted publickey" not in (cluster.workdir(details["id"]) / "logs" / "pod.log").read_text()
    downloaded = lorapod("download", details["id"][:8], "--package", "adapter", "-o", str(tmp_path / "out"), env=env)
    assert downloaded.returncode == 0, downloaded.stderr


def test_cancel_from_the_command_line_stops_the_job_and_deletes_its_pod(cluster: Cluster, tmp_path: Path) -> None:
    env = cluster.env(tmp_path / "home")
    assert lorapod("run", *SMOKE, "--detach", env=env).returncode == 0
    job = only_job(env)
    wait_for(lambda: any(e["type"] == "checkpoint" for e in cluster.events(job["id"])), timeout=120)
    result = lorapod("cancel", job["short_id"], "--yes", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    details = show(job["short_id"], env)
    assert details["status"] == "cancelled"
    assert [a["outcome"] for a in details["attempts"]] == ["cancelled"]
    (pod,) = cluster.job_pods(job["id"])
    assert pod.id in cluster.standin.deleted and pod.id not in cluster.standin.pods


def test_a_pod_killed_mid_training_is_resumed_on_a_new_pod_to_the_same_final_loss(
    cluster: Cluster, over_ssh: Finished, tmp_path: Path
) -> None:
    expected = final_loss(cluster.events(over_ssh.job["id"]))
    env = cluster.env(tmp_path / "home", LORAPOD_AUTO_RESUME="true", HF_TOKEN="hf_RESUME_3e1f")
    assert lorapod("run", *SMOKE, "--detach", env=env).returncode == 0
    job = only_job(env)
    wait_for(
        lambda: (
            any(e["type"] == "checkpoint" for e in cluster.events(job["id"]))
            and any(e["type"] == "metrics" and e["step"] >= 5 for e in cluster.events(job["id"]))
        ),
        timeout=120,
    )
    (first,) = cluster.job_pods(job["id"])
    cluster.standin.preempt(first.id)
    # No command is typed: the background supervisor notices, starts a new pod and follows it to the end.
    wait_for(lambda: ledger_rows(env_home(env), "select status from training_jobs") == [("completed",)], timeout=300)
    details = show(job["short_id"], env)
    assert details["status"] == "completed"
    attempts = details["attempts"]
    assert [a["outcome"] for a in attempts] == ["interrupted", "completed"]
    assert all(a["cost_usd"] > 0 for a in attempts)
    first_again, second = cluster.job_pods(job["id"])
    assert first_again.id == first.id and second.body["env"]["LORAPOD_RESUME"] == "1"
    # The new pod got its secrets too, delivered by the background supervisor, under a bootstrap token of its own.
    pod_log = (cluster.workdir(job["id"]) / "logs" / "pod.log").read_text()
    assert pod_log.count("secrets received: HF_TOKEN") == 2 and "hf_RESUME_3e1f" not in pod_log
    boots = [p.body["env"]["LORAPOD_BOOTSTRAP_TOKEN"] for p in (first, second)]
    assert boots[0] != boots[1] and "HF_TOKEN" not in second.body["env"]
    wait_for(lambda: first.id in cluster.standin.deleted and second.id in cluster.standin.deleted, timeout=60)
    events = cluster.events(job["id"])
    assert any(e["type"] == "log" and "resuming from checkpoint-" in e["message"] for e in events)
    assert final_loss(events) == expected


def test_no_capacity_walks_the_gpu_priority_list_then_names_every_gpu_tried(cluster: Cluster, tmp_path: Path) -> None:
    gpus = ["NVIDIA H100 80GB HBM3", "NVIDIA H100 NVL", "NVIDIA H100 PCIe"]
    cluster.standin.no_capacity = set(gpus)
    env = cluster.env(tmp_path / "home")
    before = len(cluster.standin.requests)
    result = lorapod("run", *SMOKE, env=env)
    assert result.returncode == 1
    assert ", ".join(gpus) in result.stderr and "capacity" in result.stderr
    asked = [body["gpuTypeIds"] for method, _, body in cluster.standin.requests[before:] if method == "POST"]
    assert asked == [[gpu] for gpu in gpus]
    job = only_job(env)
    assert job["status"] == "failed" and job["error_category"] == "launch"
    assert not cluster.job_pods(job["id"])

    # With the first type taken, the second one is rented.
    cluster.standin.no_capacity = {gpus[0]}
    env = cluster.env(tmp_path / "second")
    assert lorapod("run", *SMOKE, "--detach", env=env).returncode == 0
    job = only_job(env)
    assert ledger_rows(tmp_path / "second", "select gpu_type from training_jobs") == [(gpus[1],)]
    assert lorapod("cancel", job["short_id"], "--yes", env=env).returncode == 0
    assert all(pod.id in cluster.standin.deleted for pod in cluster.job_pods(job["id"]))


def test_a_pod_that_fails_to_start_is_deleted_and_its_last_log_lines_shown(cluster: Cluster, tmp_path: Path) -> None:
    cluster.standin.env_overrides = {"LORAPOD_PYTHON": "/nonexistent/python3"}  # a broken image
    env = cluster.env(tmp_path / "home", LORAPOD_RUNPOD_START_TIMEOUT_S="30")
    result = lorapod("run", *SMOKE, env=env)
    assert result.returncode == 1
    assert "did not start" in result.stderr and "exit code 127" in result.stderr, result.stderr
    assert "/nonexistent/python3" in result.stderr  # from the pod's own log
    job = only_job(env)
    (pod,) = cluster.job_pods(job["id"])
    assert pod.id in cluster.standin.deleted
    assert job["status"] == "failed"


def test_pods_lists_lorapods_pods_and_terminates_the_orphans(cluster: Cluster, tmp_path: Path) -> None:
    cluster.standin.start_delay_s = 600  # never starts: only its record matters here
    env = cluster.env(tmp_path / "home")
    stray = "lorapod-00000000-0000-4000-8000-00000000beef"
    body = {"name": stray, "imageName": "img", "gpuTypeIds": ["NVIDIA H200"], "env": {}}
    created = httpx.post(f"{cluster.standin.rest_url}/pods", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert created.status_code == 201
    pod_id = created.json()["id"]
    listed = json.loads(lorapod("pods", "--json", env=env).stdout)
    (row,) = [p for p in listed["pods"] if p["pod_id"] == pod_id]
    assert row["orphan"] == "no such job in this ledger" and listed["orphans"] >= 1
    text = lorapod("pods", env=env)
    assert pod_id in text.stdout and "orphan" in text.stdout and "--terminate-orphans" in text.stdout
    refused = lorapod("pods", "--terminate-orphans", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert pod_id in cluster.standin.pods
    done = lorapod("pods", "--terminate-orphans", "--yes", env=env)
    assert done.returncode == 0 and f"deleted pod {pod_id}" in done.stdout
    assert pod_id not in cluster.standin.pods


def test_events_fall_back_to_http_when_ssh_goes_and_a_changed_host_key_is_refused(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import remote.runpod.transport as transport_module
    from remote.provider import RunHandle
    from remote.runpod import HostKeyChanged
    from remote.supervisor import Supervisor
    from store.db import Ledger
    from store.settings import load_settings

    monkeypatch.setattr(transport_module, "FAILING_AFTER_S", 1.0)
    home = tmp_path / "home"
    env = cluster.env(home)
    for name, value in env.items():
        if name.startswith(("LORAPOD_", "RUNPOD_")):
            monkeypatch.setenv(name, value)
    ledger = Ledger(load_settings().paths.ledger)
    supervisor = Supervisor(ledger, load_settings())
    import presets

    spec = presets.get("smoke").to_spec(str(SAMPLE), ["provider=runpod", "num_epochs=2", "eval_generations=1"])
    job = supervisor.submit(spec).job
    handle = RunHandle.model_validate(supervisor.launch(job.id).handle)
    pod = cluster.standin.pods[handle.pod_id or ""]
    provider = supervisor.provider("runpod")
    stream = provider.events(handle, 0)
    seqs: list[int] = []
    try:
        wait_for(lambda: seqs.extend(e["seq"] for e in stream.poll(0.2)) or len(seqs) >= 3, timeout=60)
        kill_tree(int((pod.folder / "sshd.pid").read_text()))  # sshd is gone for good
        wait_for(lambda: seqs.extend(e["seq"] for e in stream.poll(0.2)) or stream.feed.transport == "http", timeout=60)
        last = seqs[-1]
        wait_for(lambda: seqs.extend(e["seq"] for e in stream.poll(0.2)) or seqs[-1] >= last + 3, timeout=60)
        assert seqs == list(range(1, len(seqs) + 1))  # none lost, none twice, across the switch
    finally:
        stream.close()

    pod.replace_host_key()
    fresh = Supervisor(ledger, load_settings()).provider("runpod")  # a later process: no connection kept
    with pytest.raises(HostKeyChanged) as refused:
        fresh.logs(handle)
    message = str(refused.value)
    assert f"127.0.0.1:{pod.ssh_port} has changed" in message and "refuses to connect" in message
    assert "--forget-host-key" in message
    cli = lorapod("logs", str(job.id)[:8], env=env)
    assert cli.returncode == 1 and "has changed" in cli.stderr and "Traceback" not in cli.stderr
    provider.terminate(handle)
    time.sleep(0.3)
    assert pod.id in cluster.standin.deleted


def test_a_wrong_api_key_is_refused_with_a_message_that_does_not_show_it(cluster: Cluster, tmp_path: Path) -> None:
    wrong = "rpa_WRONG_1234567890abcdef"
    env = cluster.env(tmp_path / "home", RUNPOD_API_KEY=wrong)
    result = lorapod("run", *SMOKE, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "refused the API key" in result.stderr and "RUNPOD_API_KEY" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert only_job(env)["error_category"] == "launch"


def env_home(env: dict[str, str]) -> Path:
    return Path(env["LORAPOD_HOME"])


def test_a_pod_stops_itself_at_its_cost_limit_and_deletes_itself(cluster: Cluster, tmp_path: Path) -> None:
    from remote.daemon import stop
    from store.costs import find_gpu, gpu_price
    from store.settings import load_settings, resolve_paths
    from tests.test_self_governing import SLOW_STEPS

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_STEPS)
    cluster.standin.env_overrides = {"PYTHONPATH": f"{hooks}{os.pathsep}{ROOT}"}
    cluster.standin.no_capacity = {"NVIDIA H100 80GB HBM3"}  # rented on the next GPU, at another price
    env = cluster.env(tmp_path / "home", LORAPOD_RUNPOD_POD_LINGER_S="2")
    rate, _ = gpu_price(find_gpu("NVIDIA H100 80GB HBM3"), "SECURE", load_settings())
    cap = round(rate * 15 / 3600, 4)  # the engine reaches it 15 s into its life
    launched = lorapod("run", *SMOKE, "--detach", "--set", f"max_cost_usd={cap}", env=env)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    job = only_job(env)
    assert stop(resolve_paths(env))  # nothing of lorapod's runs on this side any more
    wait_for(lambda: any(e.get("stage") == "cancelled" for e in cluster.events(job["id"])), timeout=300)
    end = [e for e in cluster.events(job["id"]) if e["type"] == "stage"][-1]
    assert end["limit"] == "cost" and "the job's max_cost_usd" in end["message"]
    (pod,) = cluster.job_pods(job["id"])
    assert pod.gpu != "NVIDIA H100 80GB HBM3"
    assert f"${pod.cost_per_hr:,.2f}/h" in end["message"]  # counted at the rate RunPod bills, not the guess
    wait_for(lambda: pod.id in cluster.standin.deleted, timeout=120)  # the pod deleted itself

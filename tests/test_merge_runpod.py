"""A RunPod job's adapter merged on a pod (the stand-in): the rate agreed to first, the files downloaded here match
the local merge byte for byte, the pod is deleted and billed to the job however the merge ends, and what cannot
work is refused before anything is rented."""

from __future__ import annotations

import hashlib
import json
import signal
import uuid
from pathlib import Path

import pytest

import presets
from engine.checksums import sha256_file
from remote.exports import ExportError, merge_locally
from remote.runpod.merge import RunPodMerges
from remote.runpod.stock import STOCK_IMAGE
from store.attempts import list_attempts, start_attempt
from store.db import Ledger
from store.jobs import get_job
from store.models import TrainingJob
from store.settings import load_settings
from tests.engine_helpers import SAMPLE, wait_for
from tests.playground_helpers import completed_job, finished_workdir
from tests.runpod_helpers import VOLUME, Cluster, demo_cluster, lorapod, spawn
from tests.standins.runpod.pods import STOCK_PYTHON
from tests.test_export_model import _greedy

pytestmark = pytest.mark.slow
__all__ = ["demo_cluster"]  # the module's stand-in RunPod (a fixture)
SECRET = "hf_mergeSecretNeverOnThePod"


def _runpod_job(cluster: Cluster, ledger: Ledger, demo_model: Path, *settings: str, base: str = "demo:tiny-llama",
                adapter: bool = True) -> TrainingJob:  # fmt: skip
    """A completed RunPod job whose workdir (spec and adapter) is on the stand-in's network volume."""
    spec = presets.get("smoke").to_spec(str(SAMPLE), ["provider=runpod", f"network_volume_id={VOLUME}", *settings])
    spec = spec.model_copy(update={"job_id": str(uuid.uuid4()), "base_model": base})
    job = completed_job(ledger, spec, f"/workspace/lorapod/jobs/{spec.job_id}")
    if adapter:
        finished_workdir(cluster.workdir(str(job.id)), demo_model, base_model=base)
    return job


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in folder.rglob("*") if p.is_file()}


def _merge_pods(cluster: Cluster, job: TrainingJob) -> list[str]:
    pods = [*cluster.standin.pods.values(), *cluster.standin.deleted.values()]
    return [p.id for p in pods if p.name == f"lorapod-merge-{job.id}"]


def test_the_adapter_merged_on_a_pod_matches_the_local_merge_and_the_pod_is_billed_and_deleted(
    cluster: Cluster, demo_model: Path, lorapod_home: Path, ledger: Ledger, tmp_path: Path
) -> None:
    job = _runpod_job(cluster, ledger, demo_model)
    env = cluster.env(lorapod_home, HF_TOKEN=SECRET)
    out = tmp_path / "merged"
    command = ("export-model", str(job.id)[:8], "--merged", "--on-pod", "-o", str(out))

    # The rate and the disk come first, and nothing is rented until they are agreed to.
    asked = lorapod(*command, env=env)
    assert asked.returncode == 2, asked.stderr[-2000:]
    assert "/h, billed to job" in asked.stderr and f"network volume {VOLUME}" in asked.stderr
    assert "Start a merge pod at $" in asked.stderr and "--yes" in asked.stderr
    assert _merge_pods(cluster, job) == [] and list_attempts(ledger, job.id) == []

    done = lorapod(*command, "--yes", "--json", env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    document = json.loads(done.stdout)
    (pod_id,) = _merge_pods(cluster, job)
    pod = cluster.standin.deleted[pod_id]  # deleted once the files were here
    assert document["merged_on"] == "pod" and document["pod"]["pod_id"] == pod_id
    assert pod.body["env"]["LORAPOD_MERGE"] == "1" and pod.body["networkVolumeId"] == VOLUME
    assert SECRET not in json.dumps(pod.body) and "LORAPOD_POD_TOKEN" not in pod.body["env"]
    assert ("GET", "/merge/files/model.safetensors") in cluster.standin.proxied  # through RunPod's proxy

    # Byte for byte the merge this machine makes of the same adapter, and it answers as base plus adapter does.
    workdir = cluster.workdir(str(job.id))
    local = tmp_path / "local"
    merge_locally(workdir / "adapter", "demo:tiny-llama", local, models_dir=cluster.volume / "lorapod" / "models",
                  token=None)  # fmt: skip
    downloaded = _files(out)
    assert "README.md" in downloaded and "model.safetensors" in downloaded
    downloaded.pop("README.md")  # the model card, written here from the job
    assert downloaded == _files(local)
    prompt = "I'm anxious about my retirement savings."
    assert _greedy(str(out), None, prompt, 8) == _greedy(str(demo_model), workdir / "adapter", prompt, 8)
    assert not (workdir / "merged").exists()  # downloaded: the volume does not keep a second copy

    (attempt,) = list_attempts(ledger, job.id)
    assert attempt.outcome == "merged" and attempt.ended_at is not None
    assert attempt.rate_usd_per_hour == pod.cost_per_hr > 0
    assert attempt.cost_usd == pytest.approx(document["pod"]["cost_usd"], abs=1e-5) and attempt.cost_usd > 0
    assert get_job(ledger, job.id).actual_cost_usd == pytest.approx(attempt.cost_usd)


def test_a_merge_on_the_stock_image_is_bootstrapped_handed_nothing_and_matches_the_local_merge(
    cluster: Cluster, demo_model: Path, lorapod_home: Path, ledger: Ledger, tmp_path: Path
) -> None:
    if not STOCK_PYTHON.is_file():
        pytest.skip(f"the stock image's Python stands in as {STOCK_PYTHON}, which this machine lacks")
    cluster.reset()
    job = _runpod_job(cluster, ledger, demo_model)
    env = cluster.env(lorapod_home, LORAPOD_RUNPOD_IMAGE="", HF_TOKEN=SECRET, LORAPOD_RUNPOD_START_TIMEOUT_S="300")
    out = tmp_path / "merged"
    command = ("export-model", str(job.id)[:8], "--merged", "--on-pod", "-o", str(out))

    # The default setup (no runpod_image): the quote says the pod starts on RunPod's stock image.
    asked = lorapod(*command, env=env)
    assert asked.returncode == 2, asked.stderr[-2000:]
    quote = " ".join(asked.stderr.split())
    assert f"RunPod's stock image ({STOCK_IMAGE})" in quote and "Start a merge pod at $" in quote
    assert _merge_pods(cluster, job) == []

    done = lorapod(*command, "--yes", "--json", env=env, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (pod_id,) = _merge_pods(cluster, job)
    pod = cluster.standin.deleted[pod_id]
    assert pod.body["imageName"] == STOCK_IMAGE and pod.body["dockerStartCmd"][:2] == ["bash", "-c"]
    assert pod.body["networkVolumeId"] == VOLUME
    assert pod.body["env"]["LORAPOD_MERGE"] == "1" and pod.body["env"]["HF_HUB_OFFLINE"] == "1"
    assert SECRET not in json.dumps(pod.body) and "LORAPOD_POD_TOKEN" not in pod.body["env"]
    # It was handed over as a service pod is, and its delivery carried nothing, and was taken from tmpfs.
    pod_log = (cluster.workdir(str(job.id)) / "logs" / "pod.log").read_text()
    assert "secrets received: none" in pod_log and SECRET not in pod_log
    secrets_dir = Path(env["LORAPOD_RUNPOD_SECRETS_DIR"])
    assert not secrets_dir.exists() or list(secrets_dir.iterdir()) == []

    local = tmp_path / "local"
    merge_locally(cluster.workdir(str(job.id)) / "adapter", "demo:tiny-llama", local,
                  models_dir=cluster.volume / "lorapod" / "models", token=None)  # fmt: skip
    assert {name: sha for name, sha in _files(out).items() if name != "README.md"} == _files(local)
    (attempt,) = list_attempts(ledger, job.id)
    assert attempt.outcome == "merged" and attempt.ended_at is not None
    assert attempt.rate_usd_per_hour == pod.cost_per_hr and attempt.cost_usd > 0
    assert get_job(ledger, job.id).actual_cost_usd == pytest.approx(attempt.cost_usd)


def test_a_merge_that_fails_on_the_pod_says_why_and_the_pod_is_deleted_and_billed(
    cluster: Cluster, demo_model: Path, lorapod_home: Path, ledger: Ledger, tmp_path: Path
) -> None:
    # The base weights are not in the volume's cache (and the pod has no Hub to ask): the engine's reason.
    job = _runpod_job(cluster, ledger, demo_model, base="acme/not-on-the-volume")
    failed = lorapod("export-model", str(job.id)[:8], "--merged", "--on-pod", "--yes", "-o", str(tmp_path / "out"),
                     env=cluster.env(lorapod_home))  # fmt: skip
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert (
        "the merge on pod" in failed.stderr and "base model acme/not-on-the-volume: cannot be loaded" in failed.stderr
    )
    assert "Traceback" not in failed.stderr
    (pod_id,) = _merge_pods(cluster, job)
    assert pod_id in cluster.standin.deleted and pod_id not in cluster.standin.pods
    (attempt,) = list_attempts(ledger, job.id)
    assert attempt.outcome == "merge-failed" and attempt.ended_at is not None and attempt.cost_usd > 0


def test_what_cannot_work_is_refused_before_any_pod_is_created(
    cluster: Cluster, demo_model: Path, lorapod_home: Path, ledger: Ledger, tmp_path: Path
) -> None:
    env = cluster.env(lorapod_home)
    before = len(cluster.standin.requests)
    cluster.standin.volume_sizes = {VOLUME: 3}
    try:
        # 1 B parameters: 2 GB of base weights and 2.1 GB merged beside them do not fit a 3 GB volume.
        small = _runpod_job(cluster, ledger, demo_model, "model_size_b=1", adapter=False)
        refused = lorapod("export-model", str(small.id)[:8], "--merged", "--on-pod", "--yes", "-o",
                          str(tmp_path / "a"), env=env)  # fmt: skip
        assert refused.returncode == 1
        assert "needs 4 GB" in refused.stderr and "holds 3 GB" in refused.stderr, refused.stderr[-2000:]
        # A download this machine's disk cannot take.
        huge = _runpod_job(cluster, ledger, demo_model, "model_size_b=100000", adapter=False)
        no_room = lorapod("export-model", str(huge.id)[:8], "--merged", "--yes", "-o", str(tmp_path / "b"), env=env)
        assert no_room.returncode == 1 and "cannot be downloaded here" in no_room.stderr, no_room.stderr[-2000:]
        assert "too big to merge here" in no_room.stderr  # why the pod was offered
    finally:
        cluster.reset()
    # A job that ran without a network volume left its adapter with its pod.
    spec = presets.get("smoke").to_spec(str(SAMPLE), ["provider=runpod"])
    bare = completed_job(ledger, spec.model_copy(update={"job_id": str(uuid.uuid4())}), "/workspace/x")
    no_volume = lorapod("export-model", str(bare.id)[:8], "--merged", "--on-pod", "--yes", "-o", str(tmp_path / "c"),
                        env={**env, "LORAPOD_RUNPOD_NETWORK_VOLUME_ID": ""})  # fmt: skip
    assert no_volume.returncode == 1 and "ran without a network volume" in no_volume.stderr, no_volume.stderr
    assert not any(method == "POST" and path == "/v1/pods" for method, path, _ in cluster.standin.requests[before:])


def test_a_merge_attempt_left_open_by_a_killed_client_is_closed_once_its_pod_is_gone(
    cluster: Cluster, demo_model: Path, lorapod_home: Path, ledger: Ledger, tmp_path: Path
) -> None:
    job = _runpod_job(cluster, ledger, demo_model, adapter=False)
    handle = {"provider": "runpod", "job_id": str(job.id), "workdir": "/workspace/x", "pod_id": "podgonelongago",
              "extra": {"merge": True}}  # fmt: skip
    start_attempt(ledger, job.id, provider="runpod", handle=handle, rate_usd_per_hour=2.5, gpu_count=1)
    asked = lorapod("export-model", str(job.id)[:8], "--merged", "--on-pod", "-o", str(tmp_path / "o"),
                    env=cluster.env(lorapod_home))  # fmt: skip
    assert asked.returncode == 2, asked.stderr[-2000:]  # only the quote: nothing rented
    (attempt,) = list_attempts(ledger, job.id)
    assert attempt.outcome == "merge-gone" and attempt.ended_at is not None and attempt.cost_usd > 0


def test_ctrl_c_while_the_pod_starts_deletes_it_and_closes_its_attempt(
    cluster: Cluster, demo_model: Path, lorapod_home: Path, ledger: Ledger, tmp_path: Path
) -> None:
    job = _runpod_job(cluster, ledger, demo_model)
    cluster.standin.start_delay_s = 600  # an image pull that never ends: the client is still waiting
    try:
        process = spawn("export-model", str(job.id)[:8], "--merged", "--on-pod", "--yes", "-o", str(tmp_path / "o"),
                        env=cluster.env(lorapod_home))  # fmt: skip
        asked = len(cluster.standin.proxied)
        # Waiting for the pod to answer: its attempt is recorded and the client asks the proxy for its health.
        wait_for(lambda: ("GET", "/health") in cluster.standin.proxied[asked:], timeout=120, interval=0.2)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        cluster.reset()
    assert process.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
    (pod_id,) = _merge_pods(cluster, job)
    assert pod_id in cluster.standin.deleted
    (attempt,) = list_attempts(ledger, job.id)
    assert attempt.outcome == "merge-interrupted" and attempt.ended_at is not None


def test_a_download_that_fails_deletes_the_pod_and_the_same_command_goes_on_where_it_stopped(
    cluster: Cluster, demo_model: Path, lorapod_home: Path, ledger: Ledger, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    job = _runpod_job(cluster, ledger, demo_model)
    for name, value in cluster.env(lorapod_home).items():
        if name.startswith(("LORAPOD_", "RUNPOD_")):
            monkeypatch.setenv(name, value)
    merges = RunPodMerges(load_settings(), ledger)
    weights = cluster.workdir(str(job.id)) / "merged" / "model.safetensors"

    def say(line: str) -> None:
        if "downloading" in line:  # merged on the volume, not yet downloaded: the file goes bad on the way
            size = weights.stat().st_size
            weights.write_bytes(b"\0" * size)

    with pytest.raises(ExportError, match="sha256 does not match"):
        merges.run(merges.quote(job), tmp_path / "out", say)
    (pod_id,) = _merge_pods(cluster, job)
    assert pod_id in cluster.standin.deleted
    (attempt,) = list_attempts(ledger, job.id)
    assert attempt.outcome == "merge-download-failed" and attempt.ended_at is not None and attempt.cost_usd > 0
    assert weights.exists()  # kept on the volume for the next merge pod, which checks it before serving it
    out = tmp_path / "out"
    assert not (out / "model.safetensors").exists()  # a file that does not check out is not kept
    assert (out / "config.json").is_file()  # those that did are

    # Given the same folder again, the download goes on there: the files already checked are not fetched again,
    # and the damaged merge on the volume is found out and made again.
    asked = len(cluster.standin.proxied)
    again = lorapod("export-model", str(job.id)[:8], "--merged", "--yes", "-o", str(out), env=cluster.env(lorapod_home))
    assert again.returncode == 0, again.stderr[-3000:]
    fetched = {path for method, path in cluster.standin.proxied[asked:] if path.startswith("/merge/files/")}
    assert "/merge/files/model.safetensors" in fetched and "/merge/files/config.json" not in fetched
    local = tmp_path / "local"
    merge_locally(cluster.workdir(str(job.id)) / "adapter", "demo:tiny-llama", local,
                  models_dir=cluster.volume / "lorapod" / "models", token=None)  # fmt: skip
    assert {name: sha for name, sha in _files(out).items() if name != "README.md"} == _files(local)
    assert [a.outcome for a in list_attempts(ledger, job.id)] == ["merge-download-failed", "merged"]


def test_a_cut_download_resumes_where_it_stopped_and_a_part_that_does_not_add_up_is_fetched_again(
    tmp_path: Path,
) -> None:
    from starlette.testclient import TestClient

    from engine.merge_pod import Merge, create_app
    from engine.pod_secrets import token_sha256
    from engine.workdir import Workdir
    from remote.runpod.merge_download import MergePodClient

    work = Workdir(tmp_path / "job")
    (work.root / "merged").mkdir(parents=True)
    payload = bytes(range(256)) * 12_345
    (work.root / "merged" / "model.safetensors").write_bytes(payload)
    (work.root / "spec.json").write_text("{}")
    merge = Merge(work, tmp_path / "models")
    merge.files = [{"name": "model.safetensors", "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}]
    merge.state = "merged"
    token = "merge-pod-token-for-this-test"
    with TestClient(create_app(merge, token_sha256(token)), base_url="http://pod") as http:
        assert http.get("/merge").status_code == 401  # the pod API's token, as every pod route needs
        http.headers["Authorization"] = f"Bearer {token}"
        assert http.get("/merge/files/..%2Fspec.json").status_code == 404  # the manifest's files, nothing else
        client = MergePodClient("http://pod", token, http=http)
        target = tmp_path / "out" / "model.safetensors"
        part = target.with_name("model.safetensors.part")
        part.parent.mkdir()
        part.write_bytes(payload[:1_000_000])  # a transfer cut at 1 MB
        fetched: list[int] = []
        client.download(merge.files[0], target, fetched.append)
        assert target.read_bytes() == payload and sum(fetched) == len(payload) - 1_000_000  # only the rest came
        assert not part.exists()

        target.unlink()
        part.write_bytes(b"x" * 1000)  # not this file's beginning: its checksum fails, so it comes again whole
        fetched.clear()
        client.download(merge.files[0], target, fetched.append)
        assert target.read_bytes() == payload and sum(fetched) == (len(payload) - 1000) + len(payload)


def test_the_merge_pod_lingers_while_its_client_talks_to_it_and_not_longer(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from engine.merge_pod import Merge, await_release, create_app
    from engine.pod_secrets import token_sha256
    from engine.workdir import Workdir

    now = [0.0]
    merge = Merge(Workdir(tmp_path / "job"), tmp_path / "models", clock=lambda: now[0])
    merge.state = "merged"
    token = "merge-pod-token-for-this-test"
    with TestClient(create_app(merge, token_sha256(token)), base_url="http://pod") as http:
        now[0] = 500.0
        assert merge.idle_s() == 500.0
        http.get("/health")  # anyone may ask its health: that keeps nothing up
        http.get("/merge")  # no token: refused, and no more a sign of the client
        assert merge.idle_s() == 500.0
        assert await_release(merge, linger_s=400, poll_s=0.01) is False  # silent past the linger: it goes
        http.get("/merge", headers={"Authorization": f"Bearer {token}"})  # the client: the linger starts again
        now[0] = 600.0
        assert merge.idle_s() == 100.0
        http.post("/merge/done", headers={"Authorization": f"Bearer {token}"}, json={"keep": True})
    assert await_release(merge, linger_s=400, poll_s=0.01) is True

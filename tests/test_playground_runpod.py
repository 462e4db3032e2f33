"""A RunPod job's playground on the stand-in: a pod started on demand (its rate agreed to first) serves the job's
adapter from the network volume, answers, is billed to the job, and is deleted by the background supervisor
once idle."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

import presets
from engine.config import JobSpec
from engine.packaging import build_packages
from remote.daemon import status
from remote.provider import RunHandle
from remote.runpod.playground import RunPodPlaygrounds, playground_name
from remote.runpod.pods import PodInfo, create_request
from remote.runpod.stock import STOCK_IMAGE
from store.artifacts import record_artifact
from store.attempts import accrue, list_attempts, start_attempt
from store.db import Ledger
from store.jobs import get_job
from store.models import utcnow
from store.settings import load_settings, resolve_paths
from tests.engine_helpers import SAMPLE, wait_for, write_spec
from tests.playground_helpers import completed_job, finished_workdir
from tests.runpod_helpers import VOLUME, Cluster, demo_cluster, lorapod
from tests.standins.runpod.pods import STOCK_PYTHON
from tests.test_playground import PROMPT, greedy

pytestmark = pytest.mark.slow
__all__ = ["demo_cluster"]  # the module's stand-in RunPod (a fixture)


def test_a_runpod_jobs_adapter_is_served_on_a_pod_billed_and_deleted_once_idle(
    cluster: Cluster, demo_model: Path, lorapod_home: Path, ledger: Ledger
) -> None:
    spec = presets.get("smoke").to_spec(str(SAMPLE), ["provider=runpod", f"network_volume_id={VOLUME}"])
    spec = spec.model_copy(update={"job_id": str(uuid.uuid4())})
    job = completed_job(ledger, spec, f"/workspace/lorapod/jobs/{spec.job_id}")
    finished_workdir(cluster.workdir(str(job.id)), demo_model, base_model="demo:tiny-llama")
    env = cluster.env(
        lorapod_home, LORAPOD_PLAYGROUND_IDLE_MINUTES="0.25", LORAPOD_SUPERVISOR_IDLE_EXIT_MINUTES="0",
        HF_TOKEN="hf_playgroundSecretValue", TRAINING_WEBHOOK_SECRET="whsec-playground-secret",
    )  # fmt: skip
    short = str(job.id)[:8]

    # The rate comes first, and nothing is rented until it is agreed to.
    asked = lorapod("chat", short, "--prompt", PROMPT, env=env)
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert "/h, billed to job" in asked.stdout and "Start a playground pod at $" in asked.stderr
    assert not cluster.standin.pods and list_attempts(ledger, job.id) == []

    answered = lorapod("chat", short, "--prompt", PROMPT, "--max-new-tokens", "8", "--json", "--yes", env=env)
    assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-3000:]
    reply = json.loads(answered.stdout)
    (pod,) = [*cluster.standin.pods.values(), *cluster.standin.deleted.values()]
    assert pod.name == f"lorapod-play-{job.id}" and reply["playground"]["pod_id"] == pod.id
    assert reply["playground"]["rate_usd_per_hour"] == pod.cost_per_hr > 0
    assert pod.body["env"]["LORAPOD_PLAYGROUND"] == "1" and pod.body["networkVolumeId"] == VOLUME
    # Nothing in the create request opens more than this pod: no secret, and the bearer token only as its hash.
    body = json.dumps(pod.body)
    assert "hf_playgroundSecretValue" not in body and "whsec-playground-secret" not in body
    assert "LORAPOD_POD_TOKEN" not in pod.body["env"] and "LORAPOD_POD_TOKEN_SHA256" in pod.body["env"]
    expected = greedy(cluster.workdir(str(job.id)), demo_model, PROMPT, 8)
    assert {side: reply[side]["text"] for side in ("base", "adapter")} == expected
    assert ("POST", "/chat") in cluster.standin.proxied  # through RunPod's proxy, as on RunPod

    # No terminal stays open: the background supervisor deletes the pod once it has gone unused, and bills it.
    wait_for(lambda: pod.id in cluster.standin.deleted, timeout=120, interval=0.5)
    assert (pod.id, "user") in cluster.standin.deletions
    (attempt,) = list_attempts(ledger, job.id)
    assert attempt.outcome == "playground-idle" and attempt.ended_at is not None
    assert attempt.rate_usd_per_hour == pod.cost_per_hr
    billed = (attempt.ended_at - attempt.started_at).total_seconds() / 3600 * pod.cost_per_hr
    assert attempt.cost_usd == pytest.approx(billed, rel=1e-3) and attempt.cost_usd > 0
    assert get_job(ledger, job.id).actual_cost_usd == pytest.approx(attempt.cost_usd)
    # With no pod left and no live job, the supervisor leaves.
    wait_for(lambda: not status(resolve_paths({"LORAPOD_HOME": str(lorapod_home)})).running, timeout=60)


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    """Files under ``root`` (links followed, virtualenvs skipped) whose bytes hold ``needle``."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if d not in ("venvs", "wheels")]
        for name in files:
            path = Path(folder) / name
            with contextlib.suppress(OSError):
                if needle in path.read_bytes():
                    found.append(path)
    return found


def _adapter_package_here(ledger: Ledger, home: Path, job_id: uuid.UUID, spec: JobSpec, demo_model: Path) -> Path:
    """What the supervisor keeps of a finished RunPod job that ran without a network volume: its packages,
    copied here off its pod (the pod and its disk are gone), recorded in the ledger with their sha256."""
    work = finished_workdir(home / "trained" / str(job_id), demo_model, base_model="demo:tiny-llama")
    write_spec(spec, work.spec)
    (adapter,) = [p for p in build_packages(spec, work, {}, None) if p.kind == "adapter"]
    kept = home / "jobs" / str(job_id) / "packages" / adapter.path.name
    kept.parent.mkdir(parents=True)
    shutil.copyfile(adapter.path, kept)
    pod_workdir = f"/workspace/lorapod/jobs/{job_id}"
    record_artifact(
        ledger, job_id, artifact_type="adapter", storage_path=f"{pod_workdir}/packages/{kept.name}",
        size_bytes=adapter.size_bytes, sha256=adapter.sha256,
    )  # fmt: skip
    handle = RunHandle(provider="runpod", job_id=str(job_id), workdir=pod_workdir, pod_id="pod-of-the-job")
    trained = start_attempt(
        ledger, job_id, provider="runpod", handle=handle.model_dump(), rate_usd_per_hour=2.0, gpu_count=1
    )
    assert trained.id is not None
    accrue(ledger, trained.id, outcome="completed", cost_usd=0.5)
    return work.root


def test_a_job_without_a_volume_gets_a_playground_on_the_stock_image_with_its_adapter_sent_and_its_token_delivered(
    cluster: Cluster, demo_model: Path, lorapod_home: Path, ledger: Ledger
) -> None:
    if not STOCK_PYTHON.is_file():
        pytest.skip(f"the stock image's Python stands in as {STOCK_PYTHON}, which this machine lacks")
    cluster.reset()
    # The Hub is out of reach here, and the demo model is built from a sample the wheel does not carry: the pod
    # takes its base weights from a folder outside its own volume, as it would take them from the Hub.
    cluster.standin.env_overrides = {"LORAPOD_MODELS_DIR": str(cluster.volume / "lorapod" / "models")}
    token = "hf_gatedLlamaReadTokenValue"
    spec = presets.get("smoke").to_spec(str(SAMPLE), ["provider=runpod"])
    spec = spec.model_copy(update={"job_id": str(uuid.uuid4()), "base_model": "demo:tiny-llama"})
    job = completed_job(ledger, spec, f"/workspace/lorapod/jobs/{spec.job_id}")
    trained = _adapter_package_here(ledger, lorapod_home, job.id, spec, demo_model)
    env = cluster.env(
        lorapod_home, LORAPOD_RUNPOD_IMAGE="", LORAPOD_RUNPOD_NETWORK_VOLUME_ID="", HF_TOKEN=token,
        LORAPOD_PLAYGROUND_IDLE_MINUTES="0.25", LORAPOD_SUPERVISOR_IDLE_EXIT_MINUTES="0",
        LORAPOD_RUNPOD_START_TIMEOUT_S="300",
    )  # fmt: skip
    short = str(job.id)[:8]

    # The quote says what this start involves before anything is rented.
    asked = lorapod("chat", short, "--prompt", PROMPT, env=env)
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert "stock image" in asked.stdout and "downloads demo:tiny-llama's weights from the Hugging Face Hub" in (
        asked.stdout
    )
    assert "Its start takes longer" in asked.stdout
    assert not cluster.standin.pods

    answered = lorapod(
        "chat", short, "--prompt", PROMPT, "--max-new-tokens", "8", "--json", "--yes", env=env, timeout=1500
    )
    assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-3000:]
    reply = json.loads(answered.stdout)
    (pod,) = [
        p for p in [*cluster.standin.pods.values(), *cluster.standin.deleted.values()] if p.name.endswith(str(job.id))
    ]
    assert pod.name == f"lorapod-play-{job.id}" and reply["playground"]["pod_id"] == pod.id
    assert pod.body["imageName"] == STOCK_IMAGE and pod.body["dockerStartCmd"][:2] == ["bash", "-c"]
    assert "networkVolumeId" not in pod.body and pod.body["volumeInGb"] >= 20
    assert pod.body["env"]["LORAPOD_PLAYGROUND"] == "1" and "HF_HUB_OFFLINE" not in pod.body["env"]
    assert pod.body["env"]["LORAPOD_AWAIT_INPUT"].endswith(".zip")
    expected = greedy(trained, demo_model, PROMPT, 8)
    assert {side: reply[side]["text"] for side in ("base", "adapter")} == expected
    # The adapter went to the pod's own volume, checked by sha256 on the way.
    assert (pod.volume / "lorapod" / "jobs" / str(job.id) / "adapter" / "adapter_model.safetensors").is_file()

    # The token reached the pod's playground process by the one-time delivery, and nowhere else.
    pod_log = (pod.volume / "lorapod" / "jobs" / str(job.id) / "logs" / "pod.log").read_text()
    assert "secrets received: HF_TOKEN" in pod_log
    assert token not in json.dumps(pod.body) and token not in json.dumps(pod.record())
    assert token not in pod_log and token not in (pod.folder / "container.log").read_text(errors="replace")
    assert token.encode() not in (lorapod_home / "ledger.sqlite").read_bytes()
    assert token not in answered.stdout + answered.stderr
    assert _files_holding(lorapod_home, token.encode()) == []  # the ledger, lorapod's logs, the pod's volume
    secrets_dir = Path(env["LORAPOD_RUNPOD_SECRETS_DIR"])
    assert not secrets_dir.exists() or list(secrets_dir.iterdir()) == []  # taken, then removed

    # Billed, and deleted by the background supervisor once idle.
    wait_for(lambda: pod.id in cluster.standin.deleted, timeout=120, interval=0.5)
    attempts = list_attempts(ledger, job.id)
    assert [a.outcome for a in attempts] == ["completed", "playground-idle"]
    played = attempts[-1]
    assert played.rate_usd_per_hour == pod.cost_per_hr and played.cost_usd > 0
    assert get_job(ledger, job.id).actual_cost_usd == pytest.approx(0.5 + played.cost_usd)
    wait_for(lambda: not status(resolve_paths({"LORAPOD_HOME": str(lorapod_home)})).running, timeout=60)


def test_the_quote_for_a_job_without_a_volume_names_the_weights_download_and_sizes_the_disk_for_it(
    cluster: Cluster, lorapod_home: Path, ledger: Ledger
) -> None:
    cluster.reset()
    spec = presets.get("smoke").to_spec(str(SAMPLE), ["provider=runpod"])
    spec = spec.model_copy(
        update={"job_id": str(uuid.uuid4()), "base_model": "meta-llama/Meta-Llama-3-70B-Instruct", "model_size_b": None}
    )
    job = completed_job(ledger, spec, f"/workspace/lorapod/jobs/{spec.job_id}")
    env = cluster.env(lorapod_home, LORAPOD_RUNPOD_IMAGE="", LORAPOD_RUNPOD_NETWORK_VOLUME_ID="")
    asked = lorapod("chat", str(job.id)[:8], "--prompt", PROMPT, env=env)
    assert asked.returncode == 2, asked.stdout + asked.stderr
    quote = " ".join(asked.stdout.split())
    # 70.6 B parameters × 2 bytes (the Hub is out of reach here), on a volume that holds them with room to spare.
    assert "Meta-Llama-3-70B-Instruct's weights from the Hugging Face Hub (141.2 GB" in quote, quote
    disk = int(quote.split(" GB volume")[0].rsplit(" ", 1)[-1])
    assert disk >= 141 + 15
    assert "stock image" in quote and "Its start takes longer" in quote

    # Sending the adapter and the token needs SSH: over HTTP alone it is refused before anything is rented.
    refused = lorapod(
        "chat", str(job.id)[:8], "--prompt", PROMPT, "--yes", env={**env, "LORAPOD_RUNPOD_TRANSPORT": "http"}
    )
    assert refused.returncode != 0 and "SSH" in refused.stdout + refused.stderr
    every = [*cluster.standin.pods.values(), *cluster.standin.deleted.values()]
    assert not [p for p in every if p.name.endswith(str(job.id))]


def test_a_playground_pod_still_starting_is_not_taken_for_idle(
    cluster: Cluster, lorapod_home: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stock-image pod that installs lorapod and downloads the weights may take longer than the idle time to
    answer; the background supervisor leaves it alone until its start allowance has passed."""
    cluster.reset()
    for name, value in cluster.env(lorapod_home, LORAPOD_PLAYGROUND_IDLE_MINUTES="1").items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    spec = presets.get("smoke").to_spec(str(SAMPLE), ["provider=runpod"])
    spec = spec.model_copy(update={"job_id": str(uuid.uuid4())})
    job = completed_job(ledger, spec, f"/workspace/lorapod/jobs/{spec.job_id}")
    playgrounds = RunPodPlaygrounds(settings, ledger)
    body = create_request(
        job_id=job.id, spec=spec, gpu_type=spec.resources.gpu_types[0], image=STOCK_IMAGE, env={},
        network_volume_id=None, volume_mount_path=settings.runpod_volume_mount_path,
        start_cmd=["bash", "-c", "sleep 600"],  # a pod that does not answer yet
    )  # fmt: skip
    pod = PodInfo.parse(playgrounds.rest.create_pod({**body, "name": playground_name(job.id)}))
    created = utcnow()
    handle = RunHandle(
        provider="runpod", job_id=str(job.id), workdir="/workspace", pod_id=pod.id,
        extra={"playground": True, "last_used_at": created.isoformat(),
               "starting_until": (created + timedelta(minutes=30)).isoformat()},
    )  # fmt: skip
    start_attempt(ledger, job.id, provider="runpod", handle=handle.model_dump(), rate_usd_per_hour=1.0, gpu_count=1)

    assert playgrounds.reap_idle(now=created + timedelta(minutes=20)) == 1  # idle for 20 min, but still starting
    assert pod.id not in cluster.standin.deleted
    assert playgrounds.reap_idle(now=created + timedelta(minutes=31)) == 0  # its allowance is over
    assert pod.id in cluster.standin.deleted
    (attempt,) = list_attempts(ledger, job.id)
    assert attempt.outcome == "playground-idle"

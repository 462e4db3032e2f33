"""A RunPod job's playground on the stand-in: a pod started on demand (its rate agreed to first) serves the job's
adapter from the network volume, answers, is billed to the job, and is deleted by the background supervisor
once idle."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import presets
from remote.daemon import status
from store.attempts import list_attempts
from store.db import Ledger
from store.jobs import get_job
from store.settings import resolve_paths
from tests.engine_helpers import SAMPLE, wait_for
from tests.playground_helpers import completed_job, finished_workdir
from tests.runpod_helpers import VOLUME, Cluster, demo_cluster, lorapod
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

"""Helpers for RunPod tests: a stand-in cluster with a seeded network volume, and lorapod run against it."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SECRET_VARIABLES
from tests.engine_helpers import SAMPLE
from tests.standins.runpod import SPEC, RunPodStandIn, StandInPod
from tests.standins.runpod.pods import SSHD

API_KEY = "rpa_STANDIN_7c1d9e4a2b8f6053e1aa"
VOLUME = "vol-lorapod-tests"
SECRETS_ROOT = Path("/dev/shm/lorapod-tests")
IMAGE = "ghcr.io/lorapod/lorapod-gpu:test"
# The smoke preset, small: two short epochs with checkpoints every 3 steps (about 25 s of CPU in a pod).
SMOKE = [
    "--provider", "runpod", "--preset", "smoke", "--dataset", str(SAMPLE),
    "--set", "num_epochs=2", "--set", "save_steps=3", "--set", "eval_generations=1", "--set", "max_new_tokens=8",
    "--set", "status_every_steps=2", "--set", "eval_every_steps=4",
]  # fmt: skip


def require_services() -> None:
    """sshd and the OpenAPI spec: a failure under CI, a skip elsewhere."""
    missing = []
    if not os.access(SSHD, os.X_OK):
        missing.append(f"OpenSSH's sshd ({SSHD}; apt-get install openssh-server)")
    if not SPEC.is_file():
        missing.append(f"RunPod's OpenAPI spec ({SPEC})")
    if missing:
        message = "the RunPod stand-in needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Cluster:
    """A running stand-in with a network volume that already holds the demo model (as after a first job)."""

    standin: RunPodStandIn
    root: Path

    @classmethod
    def start(cls, root: Path, demo_model: Path) -> Cluster:
        standin = RunPodStandIn(root / "runpod", API_KEY).start()
        models = standin.root / "volumes" / VOLUME / "lorapod" / "models"
        models.mkdir(parents=True)
        shutil.copytree(demo_model, models / "tiny-llama")
        return cls(standin, root)

    @property
    def volume(self) -> Path:
        return self.standin.root / "volumes" / VOLUME

    def reset(self) -> None:
        """Test knobs back to an ordinary RunPod."""
        self.standin.no_capacity = set()
        self.standin.start_delay_s = 0.0
        self.standin.public_ip = True
        self.standin.env_overrides = {}
        self.standin.volume_sizes = {}

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """The environment of a lorapod process that uses this stand-in as RunPod."""
        base = {
            name: value
            for name, value in os.environ.items()
            if not (name.startswith(("LORAPOD_", "XDG_")) or name in SECRET_VARIABLES)
        }
        standin = self.standin
        base.update(
            LORAPOD_HOME=str(home),
            HOME=str(home / "user-home"),
            RUNPOD_API_KEY=API_KEY,
            LORAPOD_RUNPOD_API_URL=standin.rest_url,
            LORAPOD_RUNPOD_GRAPHQL_URL=standin.graphql_url,
            LORAPOD_RUNPOD_PROXY_URL=standin.proxy_template,
            LORAPOD_RUNPOD_IMAGE=IMAGE,
            LORAPOD_RUNPOD_SSH_USER=getpass.getuser(),
            LORAPOD_RUNPOD_VOLUME_MOUNT_PATH=str(home / "mnt" / "workspace"),
            LORAPOD_RUNPOD_NETWORK_VOLUME_ID=VOLUME,
            LORAPOD_RUNPOD_POD_LINGER_S="60",
            LORAPOD_RUNPOD_START_TIMEOUT_S="60",
            HF_HUB_OFFLINE="1",  # no Hub here: the pods read the demo model from the volume
            # tmpfs, as /dev/shm is in a pod; one folder per lorapod home (removed with the cluster).
            LORAPOD_RUNPOD_SECRETS_DIR=str(SECRETS_ROOT / f"{os.getpid()}-{abs(hash(str(home)))}"),
        )
        base.update(extra)
        return base

    def job_pods(self, job_id: str) -> list[StandInPod]:
        pods = [*self.standin.pods.values(), *self.standin.deleted.values()]
        return sorted((p for p in pods if p.name == f"lorapod-{job_id}"), key=lambda p: p.created)

    def workdir(self, job_id: str) -> Path:
        return self.volume / "lorapod" / "jobs" / job_id

    def events(self, job_id: str) -> list[dict[str, Any]]:
        path = self.workdir(job_id) / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.fixture(scope="module", name="cluster")
def demo_cluster(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> Iterator[Cluster]:
    """A stand-in RunPod whose network volume holds the demo model, shared by one module's tests (import it)."""
    require_services()
    started = Cluster.start(tmp_path_factory.mktemp("runpod"), demo_model)
    yield started
    started.standin.stop()
    shutil.rmtree(SECRETS_ROOT, ignore_errors=True)
    assert started.standin.violations == [], "requests or answers that do not match RunPod's OpenAPI spec"


def lorapod(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tui.cli import main; main()", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from tui.cli import main; main()", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def show(job: str, env: dict[str, str]) -> dict[str, Any]:
    result = lorapod("show", job, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def only_job(env: dict[str, str]) -> dict[str, Any]:
    (job,) = json.loads(lorapod("jobs", "--json", env=env).stdout)["jobs"]
    return dict(job)


def ledger_rows(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "ledger.sqlite") as db:
        return db.execute(sql).fetchall()


def final_loss(events: list[dict[str, Any]]) -> float:
    return float([e["loss"] for e in events if e["type"] == "metrics" and e.get("loss") is not None][-1])


def process_environment(pid: int) -> dict[str, str]:
    """The environment a process was started with, as the kernel keeps it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)

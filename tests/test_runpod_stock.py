"""No image to build: jobs on RunPod's stock PyTorch image, through the real bootstrap, on the stand-in.

The stand-in runs a pod's ``dockerStartCmd`` with the system's Python and nothing of this checkout (no
PYTHONPATH, no interpreter of ours, its own working directory): lorapod reaches it only as the wheel it sends.
The bootstrap installs the ``train`` stack from the machine's package index into a virtualenv on the network
volume; a second pod on the same volume reuses it. Both start times are printed (BENCHMARKS.md keeps them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remote.runpod.stock import CUDA_VERSIONS, STOCK_IMAGE
from tests.runpod_helpers import SMOKE, Cluster, lorapod, require_services, show, spawn
from tests.standins.runpod.pods import STOCK_PYTHON

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> Iterator[Cluster]:
    require_services()
    if not STOCK_PYTHON.is_file():
        pytest.skip(f"the stock image's Python stands in as {STOCK_PYTHON}, which this machine lacks")
    started = Cluster.start(tmp_path_factory.mktemp("runpod-stock"), demo_model)
    yield started
    started.standin.stop()
    assert started.standin.violations == []


def _run_until_launched(env: dict[str, str]) -> tuple[float, int]:
    """Seconds from `lorapod run` to its pod's job process answering, and the command's exit code."""
    began = time.monotonic()
    process = spawn("run", *SMOKE, env=env)
    assert process.stdout is not None
    launched = None
    for line in process.stdout:
        if line.startswith("launched on runpod") and launched is None:
            launched = time.monotonic() - began
    code = process.wait(timeout=1800)
    assert launched is not None, process.stderr.read() if process.stderr else ""
    return launched, code


def test_a_job_on_the_stock_image_completes_and_a_second_pod_reuses_its_virtualenv(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = cluster.env(tmp_path / "home", LORAPOD_RUNPOD_IMAGE="")
    starts = []
    for attempt in (1, 2):
        seconds, code = _run_until_launched(env)
        starts.append(seconds)
        assert code == 0
        newest = json.loads(lorapod("jobs", "--json", env=env).stdout)["jobs"][0]  # newest first
        details = show(newest["short_id"], env)
        assert details["status"] == "completed"
        (pod,) = cluster.job_pods(details["id"])
        assert pod.body["imageName"] == STOCK_IMAGE and pod.body["dockerStartCmd"][:2] == ["bash", "-c"]
        assert pod.body["allowedCudaVersions"] == list(CUDA_VERSIONS)
        boot_log = (cluster.workdir(details["id"]) / "boot" / "bootstrap.log").read_text()
        assert ("installing the train stack" in boot_log) == (attempt == 1)
        assert ("reusing virtualenv" in boot_log) == (attempt == 2)
    venvs = [p for p in (cluster.volume / "lorapod" / "venvs").iterdir() if p.is_dir()]
    assert len(venvs) == 1 and (venvs[0] / ".complete").is_file()
    print(f"\nstock image on the stand-in: first start {starts[0]:.1f} s (installs), second {starts[1]:.1f} s (reuses)")

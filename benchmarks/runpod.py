"""RunPod benchmarks on the local stand-in (tests/standins/runpod): launch to first event, and how long an
event takes from the engine's write to lorapod, over SSH and over HTTP (the smoke preset on CPU in a pod).

The stand-in's pods are local processes, so these figures are lorapod's own overhead — polling, reconnects,
the transports — not RunPod's: a real pod adds its image pull, its start and the network.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "brightrun-sample.json"
API_KEY = "rpa_BENCHMARK_0000000000000000"


def _job(tmp: Path, standin: Any, transport: str) -> dict[str, float]:
    import presets
    from remote.provider import RunHandle
    from remote.supervisor import Supervisor
    from store.db import Ledger
    from store.settings import load_settings

    home = tmp / transport
    os.environ.update(
        LORAPOD_HOME=str(home), RUNPOD_API_KEY=API_KEY, LORAPOD_RUNPOD_API_URL=standin.rest_url,
        LORAPOD_RUNPOD_GRAPHQL_URL=standin.graphql_url, LORAPOD_RUNPOD_PROXY_URL=standin.proxy_template,
        LORAPOD_RUNPOD_IMAGE="lorapod-gpu:bench", LORAPOD_RUNPOD_SSH_USER=getpass.getuser(),
        LORAPOD_RUNPOD_VOLUME_MOUNT_PATH=str(home / "mnt" / "workspace"), LORAPOD_RUNPOD_NETWORK_VOLUME_ID="bench",
        LORAPOD_RUNPOD_TRANSPORT=transport,
    )  # fmt: skip
    settings = load_settings()
    supervisor = Supervisor(Ledger(settings.paths.ledger), settings)
    overrides = ["provider=runpod", "num_epochs=1", "eval_generations=1", "max_new_tokens=8", "log_every_steps=1"]
    job = supervisor.submit(presets.get("smoke").to_spec(str(SAMPLE), overrides)).job
    start = time.time()
    handle = RunHandle.model_validate(supervisor.launch(job.id).handle)
    launched = time.time()
    provider = supervisor.provider("runpod")
    stream = provider.events(handle, 0)
    latencies: list[float] = []
    first = None
    try:
        while True:
            events = stream.poll(0.25)
            now = time.time()
            for event in events:
                first = first or now
                latencies.append(now - datetime.fromisoformat(event["ts"]).timestamp())
            if any(e.get("stage") in ("completed", "failed", "cancelled") for e in events):
                break
            if now - start > 600:
                raise TimeoutError("the benchmark job did not finish within 10 minutes")
    finally:
        stream.close()
        provider.release(handle)
    latencies.sort()
    return {
        "ready": launched - start,
        "first_event": (first or launched) - start,
        "median": statistics.median(latencies),
        "p95": latencies[int(0.95 * (len(latencies) - 1))],
        "events": len(latencies),
    }


REPEATS = 3
FIGURES = {
    "ready": ("create → pod ready, dataset uploaded", "s", 1.0, "polled every 3 s until the pod's job process answers"),
    "first_event": ("create → first event here", "s", 1.0, "the first stage event, through the stream"),
    "median": ("event latency, median", "ms", 1000.0, "engine's timestamp → handed over by the stream"),
    "p95": ("event latency, p95", "ms", 1000.0, "engine's timestamp → handed over by the stream"),
}


def run() -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT))
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from engine.demo import build_demo_model, dataset_chats, dataset_texts
    from tests.standins.runpod import RunPodStandIn

    saved = dict(os.environ)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        standin = RunPodStandIn(tmp / "runpod", API_KEY).start()
        models = standin.root / "volumes" / "bench" / "lorapod" / "models"
        build_demo_model(models / "tiny-llama", dataset_texts(SAMPLE), dataset_chats(SAMPLE))
        try:
            for transport in ("ssh", "http"):
                standin.public_ip = transport == "ssh"  # HTTP: a pod without a public IP
                runs = [_job(tmp / str(i), standin, transport) for i in range(REPEATS)]
                for key, (label, unit, scale, how) in FIGURES.items():
                    values = sorted(r[key] * scale for r in runs)
                    spread = f"{values[0]:.{0 if unit == 'ms' else 2}f}–{values[-1]:.{0 if unit == 'ms' else 2}f}"
                    results.append(
                        {
                            "name": f"runpod {transport}: {label}",
                            "value": round(statistics.median(values))
                            if unit == "ms"
                            else round(statistics.median(values), 2),
                            "unit": unit,
                            "conditions": (
                                f"{how}; median of {REPEATS} jobs (range {spread} {unit}), {runs[0]['events']:.0f} "
                                "events each; stand-in pod (local processes: entrypoint, sshd, pod API, the engine "
                                "on CPU), smoke preset, 1 epoch"
                            ),
                        }
                    )
        finally:
            standin.stop()
            os.environ.clear()
            os.environ.update(saved)
            shutil.rmtree(tmp, ignore_errors=True)
    return results

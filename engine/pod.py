"""``python -m engine pod``: one job's life inside a RunPod pod, after the entrypoint has started sshd.

serve the pod API → wait for the dataset the supervisor uploads and for the secrets it delivers (a tmpfs file,
``engine.pod_secrets``: read once, removed, handed to the engine's process alone) → run the engine → note how it ended →
linger so a connected supervisor can take what it needs → delete this pod (RUNPOD_POD_ID, with the
pod-scoped RUNPOD_API_KEY RunPod puts in every pod). A max-duration watchdog stops the engine and deletes
the pod even when the engine hangs. Everything comes from the environment (docs/runpod.md lists it); secrets
in it are passed on to the engine and never printed; secrets never travel in it (they arrive after the pod starts).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import httpx

from engine.events import EventWriter, Stage, StageEvent, last_seq
from engine.pod_secrets import (
    BOOTSTRAP_ENV,
    DEFAULT_DIR,
    DIR_ENV,
    TIMEOUT_ENV,
    SecretsError,
    await_secrets,
    check_folder,
    secrets_path,
)
from engine.workdir import Workdir

log = logging.getLogger("engine.pod")

DEFAULT_API_URL = "https://rest.runpod.io/v1"
DEFAULT_PORT = 8000
JOBS_FOLDER = Path("lorapod") / "jobs"
STOP_GRACE_S = 30.0


def pod_workdir(workspace: Path | str, job_id: str) -> Path:
    """Where a job's workdir lies on the pod's volume."""
    return Path(workspace) / JOBS_FOLDER / job_id


@dataclass(frozen=True)
class PodConfig:
    workspace: Path
    job_id: str
    python: str
    api_port: int
    linger_s: float
    max_seconds: float | None
    await_input: str | None  # a file name the supervisor uploads into inputs/ before the engine may start
    input_timeout_s: float
    resume: bool
    pod_id: str | None
    api_url: str
    bootstrap: str | None  # this attempt's one-time token: secrets are delivered, and the engine waits for them
    secrets_dir: Path
    secrets_timeout_s: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PodConfig:
        env = dict(os.environ if env is None else env)
        job_id = env.get("LORAPOD_JOB_ID", "").strip()
        if not job_id:
            raise SystemExit("error: LORAPOD_JOB_ID is not set: this command runs inside a lorapod pod")
        max_seconds = float(env.get("LORAPOD_MAX_SECONDS") or 0)
        return cls(
            workspace=Path(env.get("LORAPOD_WORKSPACE") or "/workspace"),
            job_id=job_id,
            python=env.get("LORAPOD_PYTHON") or sys.executable,
            api_port=int(env.get("LORAPOD_POD_API_PORT") or DEFAULT_PORT),
            linger_s=float(env.get("LORAPOD_LINGER_S") or 600),
            max_seconds=max_seconds or None,
            await_input=env.get("LORAPOD_AWAIT_INPUT") or None,
            input_timeout_s=float(env.get("LORAPOD_INPUT_TIMEOUT_S") or 1800),
            resume=env.get("LORAPOD_RESUME") == "1",
            pod_id=env.get("RUNPOD_POD_ID") or None,
            api_url=(env.get("LORAPOD_RUNPOD_API_URL") or DEFAULT_API_URL).rstrip("/"),
            bootstrap=env.get(BOOTSTRAP_ENV) or None,
            secrets_dir=Path(env.get(DIR_ENV) or DEFAULT_DIR),
            secrets_timeout_s=float(env.get(TIMEOUT_ENV) or 1800),
        )


class PodJob:
    """The processes of one pod: the pod API and the engine, watched until the pod deletes itself."""

    def __init__(self, config: PodConfig) -> None:
        self.config = config
        self.workdir = Workdir(pod_workdir(config.workspace, config.job_id))
        self.engine: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self._deleted = threading.Event()
        self._delete_lock = threading.Lock()

    def run(self) -> int:
        """The whole pod job; the engine's exit code."""
        config, workdir = self.config, self.workdir
        (workdir.root / "control").mkdir(parents=True, exist_ok=True)
        workdir.inputs.mkdir(parents=True, exist_ok=True)
        workdir.engine_exit.unlink(missing_ok=True)
        workdir.pod_pid.write_text(str(os.getpid()))  # a supervisor checks it: the pod runs its job, not a crash loop
        if config.resume:  # a new pod resuming the job: the last pod's cancel request is not this one's
            workdir.cancel_request.unlink(missing_ok=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        if config.max_seconds:
            threading.Thread(target=self._watchdog, name="watchdog", daemon=True).start()
        self.api = self._spawn(["serve", "--workdir", str(workdir.root), "--port", str(config.api_port)])
        log.info("pod API on port %d; workdir %s", config.api_port, workdir.root)
        self.wait_for_input()
        try:
            secrets = self.receive_secrets()
        except SecretsError as exc:
            log.error("%s", exc)
            EventWriter(self.workdir.events, config.job_id).emit(StageEvent(stage=Stage.FAILED, message=str(exc)))
            code = 1
        else:
            code = self._run_engine(secrets)
        self._mark_exit(code)
        self._linger()
        self.delete_pod("the job has ended")
        self._stop(self.api)
        return code

    # --- stages ---------------------------------------------------------------------------------------

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen([self.config.python, "-m", "engine", *args], stdin=subprocess.DEVNULL, env=env)

    def billed_rate(self) -> float | None:
        """What RunPod bills this pod per hour (its costPerHr), asked with the pod's own key: the launcher could
        only guess it before RunPod chose the GPU, and the engine's limits count cost at this rate."""
        key = os.environ.get("RUNPOD_API_KEY", "")
        if not self.config.pod_id or not key:
            return None
        try:
            response = httpx.get(
                f"{self.config.api_url}/pods/{self.config.pod_id}", headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )  # fmt: skip
            response.raise_for_status()
            rate = float(response.json().get("costPerHr") or 0)
        except (httpx.HTTPError, ValueError, TypeError) as exc:
            log.warning("the pod's billed rate is unknown (%s): the engine counts at the estimate", type(exc).__name__)
            return None
        return rate if rate > 0 else None

    def wait_for_input(self) -> None:
        name = self.config.await_input
        if not name:
            return
        target = self.workdir.inputs / name
        deadline = time.monotonic() + self.config.input_timeout_s
        log.info("waiting for the dataset %s", target)
        while not target.is_file():
            if self.workdir.cancel_requested() or self.stopping.is_set():
                return  # the engine starts and records the cancel as its last word
            if time.monotonic() >= deadline:
                log.error("no dataset within %.0f s; the engine will report it", self.config.input_timeout_s)
                return
            time.sleep(0.2)

    def receive_secrets(self) -> dict[str, str]:
        """The secrets lorapod delivers once the pod is up, taken from tmpfs (and removed there); none are
        awaited by a pod started without a bootstrap token (the image run by hand, its secrets in its env)."""
        config = self.config
        if not config.bootstrap:
            return {}
        check_folder(config.secrets_dir, config.workspace)
        log.info("waiting for the job's secrets (delivered over SSH or the pod API)")
        values = await_secrets(
            secrets_path(config.secrets_dir, config.job_id), config.bootstrap, config.secrets_timeout_s,
            lambda: self.stopping.is_set() or self.workdir.cancel_requested() is not None,
        )  # fmt: skip
        if values is None:  # cancelled while waiting: the engine starts and records the cancel as its last word
            return {}
        log.info("secrets received: %s", ", ".join(sorted(values)) or "none")  # names only
        return values

    def _run_engine(self, secrets: dict[str, str]) -> int:
        if self.stopping.is_set():
            return 143
        models = os.environ.get("LORAPOD_MODELS_DIR") or str(self.config.workspace / "lorapod" / "models")
        env = {name: value for name, value in os.environ.items() if name != BOOTSTRAP_ENV}
        env.update(secrets)  # the engine's process alone holds them: not this one, not the pod API
        rate = self.billed_rate()
        if rate is not None:
            log.info("the pod is billed $%.4f/h", rate)
            env["LORAPOD_RATE_USD_PER_HOUR"] = f"{rate:.6f}"
        self.engine = self._spawn(["run", "--workdir", str(self.workdir.root), "--models-dir", models], env)
        code = self.engine.wait()
        log.info("the engine exited with code %d", code)
        return code

    def _mark_exit(self, code: int) -> None:
        """How the engine ended, for a supervisor that finds it exited (the seq tells it when it has read all)."""
        marker = {
            "pod_id": self.config.pod_id,
            "exit_code": code,
            "last_seq": last_seq(self.workdir.events),
            "ended_at": datetime.now(UTC).isoformat(),
        }
        path = self.workdir.engine_exit
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(marker), encoding="utf-8")
        tmp.replace(path)

    def _linger(self) -> None:
        if self.config.linger_s > 0 and not self.stopping.is_set():
            log.info("lingering %.0f s so a connected supervisor can fetch the results", self.config.linger_s)
            self.stopping.wait(self.config.linger_s)

    # --- stopping -------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()
        if self.engine is not None and self.engine.poll() is None:
            self.engine.send_signal(signum)  # the engine checkpoints and records the cancel

    def _watchdog(self) -> None:
        limit = self.config.max_seconds or 0.0
        if self._deleted.wait(max(0.0, limit - (time.monotonic() - self.started))):
            return
        reason = f"the pod's watchdog: the job ran past its maximum of {limit / 3600:.2f} h"
        log.error("%s; stopping the engine and deleting the pod", reason)
        if not self.workdir.cancel_requested():
            self.workdir.request_cancel(reason)
        self.stopping.set()
        if self.engine is not None:
            self._stop(self.engine)
        deleted = self.delete_pod(reason)
        self._stop(self.api)
        os._exit(0 if deleted else 124)  # 124: the entrypoint keeps sshd up so the log can be read

    def _stop(self, process: subprocess.Popen[bytes] | None) -> None:
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def deleted(self) -> bool:
        return self._deleted.is_set()

    def delete_pod(self, why: str) -> bool:
        """Delete this pod through RunPod's API with the pod's own key; False when that is impossible."""
        with self._delete_lock:  # the watchdog and the job may both get here
            return self._delete_pod(why)

    def _delete_pod(self, why: str) -> bool:
        if self._deleted.is_set():
            return True
        key = os.environ.get("RUNPOD_API_KEY", "")
        pod_id = self.config.pod_id
        if not pod_id or not key:
            log.warning("not on RunPod (no RUNPOD_POD_ID or RUNPOD_API_KEY): the pod is not deleted")
            return False
        log.info("deleting pod %s: %s", pod_id, why)
        url = f"{self.config.api_url}/pods/{pod_id}"
        for attempt in range(6):
            try:
                response = httpx.delete(url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
                if response.status_code in (200, 202, 204, 404):
                    self._deleted.set()
                    return True
                log.warning("deleting the pod answered HTTP %d", response.status_code)
            except httpx.HTTPError as exc:
                log.warning("deleting the pod failed: %s", type(exc).__name__)
            time.sleep(min(2**attempt, 30))
        log.error("could not delete pod %s; it keeps billing until stopped in the RunPod console", pod_id)
        return False


def main() -> int:
    """0 once the job has run (how the engine ended is in its events and the exit marker); 1 when this
    process itself fails, which the entrypoint reports."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    job = PodJob(PodConfig.from_env())
    job.run()
    if job.deleted:
        time.sleep(60)  # RunPod stops the container; exiting first would only restart it
    return 0

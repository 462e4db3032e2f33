"""The local provider (the embedded default): the engine runs on this machine as a detached process.

Each job gets a workdir under the data dir (``jobs/<job id>``). The engine is started in its own session,
so it keeps running when the command or dashboard that launched it exits; its events are read straight
from the workdir.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.config import JobSpec
from engine.limits import Limits
from engine.workdir import Workdir, engine_alive
from remote.provider import EventStream, Provider, ProviderError, RunHandle, RunState, copy_verified
from store.errors import StoreError

# Variables the engine needs from the caller's environment; secrets among them never reach a log.
_PASSED_SECRETS = {"hf_token": "HF_TOKEN", "training_webhook_secret": "TRAINING_WEBHOOK_SECRET"}


class FileEventStream:
    """Events of a workdir's events.jsonl after a seq, read from where the last poll stopped."""

    def __init__(self, path: Path, after_seq: int) -> None:
        self.path = path
        self.after_seq = after_seq
        self.offset = 0

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self._read()
            if found or time.monotonic() >= deadline:
                if found:
                    self.after_seq = int(found[-1]["seq"])
                return found
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

    def _read(self) -> list[dict[str, Any]]:
        """The complete lines after the offset, which moves past exactly the lines read: a line finished
        between two looks at the file is never stepped over unread (that lost events)."""
        found: list[dict[str, Any]] = []
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return found
        with handle:
            handle.seek(self.offset)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # still being written: read again next time
                self.offset += len(raw)
                try:
                    event = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict) and int(event.get("seq", 0)) > self.after_seq:
                    found.append(event)
        return found

    def close(self) -> None:
        pass


class LocalProvider(Provider):
    """Runs ``python -m engine run`` on this machine, one detached process per job."""

    name = "local"

    def __init__(
        self,
        jobs_dir: Path,
        models_dir: Path,
        *,
        rate_usd_per_hour: float = 0.0,
        secrets: dict[str, str] | None = None,
        python: str | None = None,
        artifact_env: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.jobs_dir = jobs_dir
        self.models_dir = models_dir
        self.rate = rate_usd_per_hour
        self.secrets = secrets or {}
        self.python = python or sys.executable
        # Where the engine uploads its packages (store.artifacts.store_environment), read at each launch.
        self.artifact_env = artifact_env

    def workdir(self, job_id: uuid.UUID) -> Workdir:
        return Workdir(self.jobs_dir / str(job_id))

    def launch(
        self, job_id: uuid.UUID, spec: JobSpec, *, resume: bool = False, limits: Limits | None = None
    ) -> RunHandle:
        if importlib.util.find_spec("torch") is None:
            raise ProviderError(
                "the local provider runs the training engine, which needs the train extra: "
                "pip install -c constraints.txt 'lorapod[train]' (or `make setup`)"
            )
        workdir = self.workdir(job_id)
        if workdir.root.exists() and not resume and any(workdir.root.iterdir()):
            raise ProviderError(f"{workdir.root} already holds a run; resume it instead of launching again")
        (workdir.root / "control").mkdir(parents=True, exist_ok=True)
        workdir.logs.mkdir(parents=True, exist_ok=True)
        spec_file = workdir.root / "control" / "spec.json"
        spec_file.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
        workdir.cancel_request.unlink(missing_ok=True)  # a resume is not cancelled by the last run's request
        command = [
            self.python, "-m", "engine", "run", "--spec", str(spec_file), "--workdir", str(workdir.root),
            "--models-dir", str(self.models_dir),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.update(replace(limits or Limits(), rate_usd_per_hour=self.rate).to_env())
        env.update({_PASSED_SECRETS[k]: v for k, v in self.secrets.items() if k in _PASSED_SECRETS and v})
        if self.artifact_env is not None:
            try:
                env.update(self.artifact_env())
            except StoreError as exc:
                raise ProviderError(f"the artifact store is not configured: {exc}") from None
        with (workdir.logs / "process.log").open("ab") as output:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # survives this terminal's Ctrl-C and this process's exit
                close_fds=True,
            )
        # Reap it when it ends while this process lives, so it never lingers as a zombie.
        threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
        return RunHandle(provider=self.name, job_id=str(job_id), workdir=str(workdir.root), pid=process.pid)

    def state(self, handle: RunHandle) -> RunState:
        if handle.pid is None:
            return RunState.LOST
        return RunState.RUNNING if engine_alive(handle.pid, handle.workdir) else RunState.EXITED

    def events(self, handle: RunHandle, after_seq: int) -> EventStream:
        return FileEventStream(Workdir(Path(handle.workdir)).events, after_seq)

    def logs(self, handle: RunHandle, offset: int = 0) -> tuple[str, int]:
        path = Workdir(Path(handle.workdir)).log_file
        try:
            with path.open("rb") as log:
                log.seek(offset)
                data = log.read(1 << 20)
        except FileNotFoundError:
            return "", offset
        cut = len(data) if len(data) < (1 << 20) else data.rfind(b"\n") + 1 or len(data)
        return data[:cut].decode("utf-8", errors="replace"), offset + cut

    def cancel(self, handle: RunHandle, reason: str) -> None:
        Workdir(Path(handle.workdir)).request_cancel(reason)
        if handle.pid is not None and engine_alive(handle.pid, handle.workdir):
            os.kill(handle.pid, signal.SIGTERM)

    def terminate(self, handle: RunHandle) -> None:
        if handle.pid is not None and engine_alive(handle.pid, handle.workdir):
            os.kill(handle.pid, signal.SIGKILL)

    def fetch_artifact(self, handle: RunHandle, name: str, dest: Path, *, sha256: str | None = None) -> Path:
        return copy_verified(Workdir(Path(handle.workdir)).packages / name, dest, sha256)

    def rate_usd_per_hour(self, handle: RunHandle | None, spec: JobSpec) -> float:
        return self.rate

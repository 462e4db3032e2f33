"""A job's working directory: where the engine keeps everything a job produces, and how others find it.

::

    spec.json               the JobSpec the job runs (a resume must bring the same training hash)
    events.jsonl            the append-only event log (engine.events)
    logs/engine.log         the engine's own log lines
    dataset/                converted examples and their manifest (engine.dataset)
    checkpoints/checkpoint-<step>/   adapter, optimizer, scheduler, RNG, trainer state, lorapod.json
    adapter/                the final adapter with its tokenizer and chat template
    eval.json               held-out evaluation: perplexities, per-group figures, generations
    metrics.csv             the metrics history
    tensorboard/            with report_to=tensorboard: the trainer's TensorBoard event files
    packages/<job>-{adapter,full,deploy}.zip   each with a sha256 manifest
    control/cancel          written to ask the engine to stop gracefully
    control/engine-exit.json   in a pod: how the engine ended (pod id, exit code, last seq)
    control/pod.pid         in a pod: the process id of ``python -m engine pod``
    inputs/                 in a pod: the dataset the supervisor uploaded
    logs/pod.log            in a pod: the entrypoint's own log (sshd, pod API, linger, deletion)
    engine.pid              the engine's process id while it runs (with several GPUs: their launcher's)
    control/rank-<n>.pid    with several GPUs: the process id of each rank while it runs
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"
PACKAGE_KINDS = ("adapter", "full", "deploy")


@dataclass(frozen=True)
class Workdir:
    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / "engine.log"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def eval_file(self) -> Path:
        return self.root / "eval.json"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def cancel_request(self) -> Path:
        return self.root / "control" / "cancel"

    @property
    def pid_file(self) -> Path:
        return self.root / "engine.pid"

    def rank_pid(self, rank: int) -> Path:
        return self.root / "control" / f"rank-{rank}.pid"

    @property
    def engine_exit(self) -> Path:
        return self.root / "control" / "engine-exit.json"

    @property
    def pod_pid(self) -> Path:
        return self.root / "control" / "pod.pid"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def pod_log(self) -> Path:
        return self.logs / "pod.log"

    def package(self, job_id: str, kind: str) -> Path:
        if kind not in PACKAGE_KINDS:
            raise ValueError(f"package kind must be one of {', '.join(PACKAGE_KINDS)}")
        return self.packages / f"{job_id}-{kind}.zip"

    def checkpoint_dirs(self) -> list[Path]:
        """Complete checkpoints, oldest first (a folder without trainer state is a save cut short)."""
        if not self.checkpoints.is_dir():
            return []
        found = []
        for path in self.checkpoints.iterdir():
            step = path.name.removeprefix(CHECKPOINT_PREFIX)
            if path.is_dir() and step.isdigit() and (path / "trainer_state.json").exists():
                found.append((int(step), path))
        return [path for _, path in sorted(found)]

    def newest_checkpoint(self) -> Path | None:
        dirs = self.checkpoint_dirs()
        return dirs[-1] if dirs else None

    def request_cancel(self, reason: str = "requested") -> None:
        """Ask a running engine to finish its step, checkpoint and stop (it checks at every step)."""
        self.cancel_request.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cancel_request.with_suffix(".tmp")
        tmp.write_text(reason, encoding="utf-8")
        tmp.replace(self.cancel_request)

    def cancel_requested(self) -> str | None:
        try:
            return self.cancel_request.read_text(encoding="utf-8") or "requested"
        except FileNotFoundError:
            return None

    def running_pid(self) -> int | None:
        """The engine's pid while this workdir's engine runs as it, else None (engine.pid may be stale)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if engine_alive(pid, self.root) else None


def engine_alive(pid: int, workdir: Path | str) -> bool:
    """Whether ``pid`` is a live process (not a zombie) whose command line names ``workdir``.

    A pid file outlives a killed engine, and its pid may since belong to an unrelated process: whoever
    signals the engine checks this first.
    """
    if pid <= 0:
        return False  # 0 and negatives name process groups: never an engine
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, under another user: /proc says whose it is
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return True  # no /proc to look at: trust the signal check
    return state != "Z" and str(workdir) in cmdline

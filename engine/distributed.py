"""Several ranks for one job: the launch under PyTorch's launcher, which rank a process is, and what they agree on.

A job with ``gpu_count`` N > 1 runs as N processes started by ``torch.distributed.run`` (what ``torchrun``
runs). Each rank trains on its own share of every global batch (N × batch_size × gradient_accumulation_steps
sequences per optimizer step) and the Trainer reduces the LoRA gradients between them. On CUDA each rank owns
one GPU (NCCL); without GPUs the ranks run on the CPU and talk through gloo, which is how the tests run them.

Rank 0 alone writes the job's record: events, checkpoints, the evaluation and the packages. The stop decision
(a cancel, a limit) and the checkpoint decision are rank 0's and reach every rank at the same step (``agree``),
so all ranks stop together and one checkpoint is written.

``python -m engine run`` itself becomes the launcher: it keeps the workdir's pid file and turns the SIGTERM or
SIGINT a supervisor sends it into the workdir's cancel request, which every rank reads. A rank that dies takes
the others down without a terminal event, so a supervisor sees the job ``interrupted``; a restart resumes it
from the newest checkpoint.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from engine import PROCESS_STARTED, SpecError
from engine.workdir import Workdir

log = logging.getLogger(__name__)
# Set by the launcher in every rank it starts: a rank never launches again.
WORLD_ENV = "LORAPOD_WORLD_SIZE"
# The launcher's start on the system-wide monotonic clock: every rank counts the job's time (its cost) from it
# (engine.PROCESS_STARTED reads it).
STARTED_ENV = "LORAPOD_LAUNCHER_STARTED"
# Exit code of a rank stopped because another rank stopped: the job is interrupted, not failed.
PEER_LOST_EXIT = 75
_PEER_FAILURE_WORDS = ("gloo", "nccl", "connection closed by peer", "connection reset by peer", "broken pipe")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


# A BaseException, like KeyboardInterrupt: it ends the rank whatever library code catches on the way.
class RankStopped(BaseException):
    """The launcher stopped this rank, because another rank died or the launcher is ending."""


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """How many ranks train this job: 1 unless the launcher started this process as one of several."""
    return int(os.environ.get(WORLD_ENV, "1"))


def is_rank_process() -> bool:
    return WORLD_ENV in os.environ


def launch_command(nproc: int, workdir: Path, models_dir: Path | None) -> list[str]:
    """``python -m torch.distributed.run`` on this machine with ``nproc`` ranks, each running the job."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
        "--nproc-per-node", str(nproc), "-m", "engine", "run", "--workdir", str(workdir),
    ]  # fmt: skip
    if models_dir is not None:
        command += ["--models-dir", str(models_dir)]
    return command


def launch(spec_json: str, workdir: Workdir, models_dir: Path | None, nproc: int) -> int:
    """Run the job as ``nproc`` ranks and wait for them; the exit code is rank 0's outcome, or the launcher's."""
    env = {
        **os.environ,
        "LORAPOD_SPEC": spec_json,  # the spec with its job id settled, so every rank runs the same job
        WORLD_ENV: str(nproc),
        STARTED_ENV: repr(PROCESS_STARTED),
        # The launcher's default of one thread per rank would halve CPU training; the ranks share the machine.
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc)),
    }
    # Its own session: a Ctrl-C or a supervisor's signal reaches this process alone, which asks every rank to
    # stop at the same step; the launcher would otherwise kill them before their checkpoint.
    launcher = os.getpid()
    child = subprocess.Popen(
        launch_command(nproc, workdir.root, models_dir),
        env=env,
        start_new_session=True,
        # A SIGKILLed launcher can ask nothing of anyone: the kernel then sends torch's agent the SIGTERM on which
        # it stops its ranks, and each rank has its own (die_with_parent) should the agent be killed too. The
        # launcher runs no other thread, so the hook between fork and exec is safe.
        preexec_fn=lambda: die_with_parent(signal.SIGTERM, launcher),  # noqa: PLW1509
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if workdir.cancel_requested() is None:  # a supervisor writes its reason before it signals
            workdir.request_cancel(f"{signal.Signals(signum).name} received")
        log.warning("%s received: every rank finishes its step, checkpoints and stops", signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    workdir.pid_file.write_text(str(os.getpid()))
    try:
        log.info("launched %d ranks (torch.distributed.run, pid %d)", nproc, child.pid)
        code = child.wait()
    finally:
        workdir.pid_file.unlink(missing_ok=True)
    if code:
        log.error("the ranks ended with exit code %d (each rank's log lines are in %s)", code, workdir.log_file)
    return code


def die_with_parent(signum: int, parent: int | None = None) -> None:
    """Have the kernel send this process ``signum`` when its parent ends (Linux); it exits at once when the parent
    (``parent``, else the one it has now) already ended before the request took hold."""
    parent = os.getppid() if parent is None else parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):  # not Linux: the supervisor's pid checks remain
        return
    if os.getppid() != parent:
        os._exit(PEER_LOST_EXIT)


def init(use_cpu: bool) -> None:
    """Join the ranks' process group (gloo for CPU tensors, NCCL for CUDA ones); the Trainer reuses it."""
    import torch
    import torch.distributed as dist

    if world_size() <= 1 or dist.is_initialized():
        return
    if not use_cpu:
        # Every rank finds this before any of them waits for another: rank 0 fails the job by name.
        if torch.cuda.device_count() < world_size():
            raise SpecError(
                f"gpu_count={world_size()}: this machine has {torch.cuda.device_count()} GPU(s); set gpu_count to "
                "at most that, or rent a pod with more"
            )
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="gloo" if use_cpu else "cpu:gloo,cuda:nccl")


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def agree(values: Sequence[int]) -> list[int]:
    """Rank 0's ``values`` on every rank (a CPU tensor through gloo); ``values`` as they are with one rank."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.int64)
    dist.broadcast(tensor, src=0)
    return [int(v) for v in tensor.tolist()]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says another rank is gone (its connection closed), not that this rank failed."""
    if isinstance(exc, RankStopped):
        return True
    try:
        from torch.distributed import DistError
    except ImportError:  # a torch without distributed support: no peers to lose
        return False
    text = str(exc).lower()
    return isinstance(exc, DistError) or (isinstance(exc, RuntimeError) and any(w in text for w in _PEER_FAILURE_WORDS))

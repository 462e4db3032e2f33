"""The provider interface: where a job's engine runs, and how its events, logs and artifacts come back.

A provider launches ``python -m engine run`` somewhere (this machine, a RunPod pod) and hands back a
``RunHandle`` — plain data, stored with the job's attempt in the ledger, so any later process (another
terminal, the dashboard after a restart) can reach the same run again.

Exceptions::

    ProviderError              a run that cannot be launched, reached or stopped; the message says why
    └── ArtifactError          an artifact that is missing or fails its checksum
"""

from __future__ import annotations

import shutil
import uuid
from abc import ABC, abstractmethod
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from engine import LorapodError
from engine.artifacts import ChecksumMismatch, copy_hashed
from engine.config import JobSpec
from engine.limits import Limits


class ProviderError(LorapodError):
    """A run that cannot be launched, reached or stopped."""


class ArtifactError(ProviderError):
    """An artifact that is missing or fails its checksum."""


class RunState(StrEnum):
    STARTING = "starting"  # asked for, not running yet (a pod being scheduled)
    RUNNING = "running"
    EXITED = "exited"  # the engine process ended (its events say how)
    LOST = "lost"  # the machine or pod is gone


class RunHandle(BaseModel):
    """How to reach one run again: stored as JSON with the attempt."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    job_id: str
    workdir: str = Field(description="The engine's workdir, as seen where the engine runs")
    pid: int | None = None
    pod_id: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class EventStream(Protocol):
    """Events of one run from a seq on; ``poll`` returns what arrived (possibly nothing) within ``timeout``."""

    def poll(self, timeout: float) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class Provider(ABC):
    """Where jobs run. Implementations: ``remote.local.LocalProvider``, ``remote.runpod.RunPodProvider``."""

    name: ClassVar[str]

    @abstractmethod
    def launch(
        self, job_id: uuid.UUID, spec: JobSpec, *, resume: bool = False, limits: Limits | None = None
    ) -> RunHandle:
        """Start the engine for a job (``resume``: again, on the workdir of an earlier attempt), handing it
        ``limits`` to keep by itself, with this provider's rate."""

    @abstractmethod
    def state(self, handle: RunHandle) -> RunState:
        """Whether the run is still going."""

    @abstractmethod
    def events(self, handle: RunHandle, after_seq: int) -> EventStream:
        """A stream of the run's events after ``after_seq``."""

    @abstractmethod
    def logs(self, handle: RunHandle, offset: int = 0) -> tuple[str, int]:
        """The engine's log from byte ``offset``, and the offset to continue from."""

    @abstractmethod
    def cancel(self, handle: RunHandle, reason: str) -> None:
        """Ask the engine to checkpoint and stop (it finishes its step first)."""

    @abstractmethod
    def terminate(self, handle: RunHandle) -> None:
        """Stop the run now, without waiting for a checkpoint."""

    @abstractmethod
    def fetch_artifact(self, handle: RunHandle, name: str, dest: Path, *, sha256: str | None = None) -> Path:
        """Copy the artifact file ``name`` (a package zip) into folder ``dest``, verified when sha256 is given."""

    @abstractmethod
    def rate_usd_per_hour(self, handle: RunHandle | None, spec: JobSpec) -> float:
        """What the run costs per hour (the billed rate where the provider reports one)."""

    def release(self, handle: RunHandle) -> None:  # noqa: B027 — optional hook
        """Free what the run holds once its job has ended (a pod, say); nothing by default."""

    def preflight(self, spec: JobSpec) -> None:  # noqa: B027 — optional hook
        """Refuse a job that cannot run where it would go, before it is recorded or anything is rented."""

    def describe_launch(self, spec: JobSpec) -> dict[str, Any]:
        """What a launch of ``spec`` would ask for, read without starting anything; ``problems`` lists what
        would refuse it."""
        return {"problems": []}

    def refresh_prices(self) -> None:  # noqa: B027 — optional hook
        """Bring the live prices the cost model reads up to date, where the provider has any."""


def copy_verified(source: Path, dest_dir: Path, sha256: str | None) -> Path:
    """Copy a file into ``dest_dir`` (written under a temporary name, renamed when complete and verified)."""
    if not source.is_file():
        raise ArtifactError(f"{source.name}: not found in the job's workdir")
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / source.name
    try:
        copy_hashed(source, target, expected=sha256)
    except ChecksumMismatch as exc:
        raise ArtifactError(str(exc)) from None
    shutil.copystat(source, target)
    return target

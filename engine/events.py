"""Engine events: versioned pydantic models, an append-only JSONL writer, and a reader that resumes by seq.

Every line of ``events.jsonl`` is one event ``{v, seq, ts, job_id, type, …}``, written whole with a single
``write`` under an exclusive lock, so a reader never sees half of one (a reader that catches a line still
being written simply waits for its newline). ``seq`` is monotonic across restarts of the same workdir: the
writer continues from the last seq in the file. The event types are documented in docs/events.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 1
EVENTS_FILE = "events.jsonl"


class Stage(StrEnum):
    PREPROCESSING = "preprocessing"
    MODEL_LOADING = "model_loading"
    TRAINING = "training"
    EVALUATING = "evaluating"
    PACKAGING = "packaging"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STAGES = frozenset({Stage.COMPLETED, Stage.FAILED, Stage.CANCELLED})


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    v: int = SCHEMA_VERSION
    seq: int = 0
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))
    job_id: str = ""


class StageEvent(_Event):
    """The job entered a stage; a terminal stage (completed, failed, cancelled) is the job's last word."""

    type: Literal["stage"] = "stage"
    stage: Stage
    message: str | None = None
    limit: Literal["cost", "duration"] | None = None  # on ``cancelled``: the limit the job stopped at
    world_size: int | None = None  # on ``training``: how many ranks (GPUs, or CPU processes) train the job
    parallelism: Literal["ddp", "fsdp"] | None = None  # on ``training`` with several ranks: how they share it


class DatasetEvent(_Event):
    """What preprocessing produced: examples, tokens and the optimizer steps they make."""

    type: Literal["dataset"] = "dataset"
    examples: int
    train_examples: int
    eval_examples: int
    tokens: int
    supervised_tokens: int
    packed_sequences: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    # The repairs conversion made, with their counts (the dataset manifest's ``repairs``): {} when turned off.
    repairs: dict[str, dict[str, int]] = Field(default_factory=dict)


class MetricsEvent(_Event):
    """Training metrics, every ``log_every_steps`` (and with ``eval_loss`` at each evaluation)."""

    type: Literal["metrics"] = "metrics"
    step: int
    total_steps: int
    epoch: float
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_second: float | None = None
    gpu_memory_gb: float | None = None  # the peak of the rank that used the most
    gpu_memory_gb_per_rank: list[float | None] | None = None  # each rank's peak, with several ranks
    elapsed: float = Field(description="seconds since training started")
    eta: float | None = Field(None, description="seconds until training ends")


class StatusEvent(_Event):
    """A human summary every ``status_every_steps``."""

    type: Literal["status"] = "status"
    step: int
    total_steps: int
    epoch: float
    message: str


class CheckpointEvent(_Event):
    type: Literal["checkpoint"] = "checkpoint"
    step: int
    epoch: float
    path: str
    reason: Literal["steps", "time", "epoch", "cancel", "final", "best"]  # best: a new lowest eval loss


class LogEvent(_Event):
    type: Literal["log"] = "log"
    level: Literal["debug", "info", "warning", "error"] = "info"
    message: str


class WarningEvent(_Event):
    type: Literal["warning"] = "warning"
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEvent(_Event):
    """A failure: its category, what happened, what to do, and values a retry can use."""

    type: Literal["error"] = "error"
    category: str
    message: str
    hint: str
    traceback: str | None = None
    suggested: dict[str, Any] = Field(default_factory=dict, description="hyperparameter overrides for a retry")


class EvalEvent(_Event):
    type: Literal["eval"] = "eval"
    base_perplexity: float | None
    adapter_perplexity: float | None
    eval_loss: float | None
    tokens: int
    groups: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    generations: list[dict[str, str]] = Field(default_factory=list)
    # Both models' replies to the held-out prompts ({prompt, reference, base, adapter, meta}), which a person
    # rates blind (`lorapod rate`) or an endpoint judges from the user's machine (`lorapod judge`).
    replies: list[dict[str, Any]] = Field(default_factory=list)
    held_out_prompts: int | None = None  # how many there were: more than ``replies`` when eval_max_prompts bounded them
    judge: dict[str, Any] | None = None  # eval.json's ``judge`` without its raw records (those stay in eval.json)
    retention: dict[str, Any] | None = None  # eval.json's ``retention``: the forgetting check
    best_checkpoint: dict[str, float] | None = None  # {step, eval_loss} of the packaged adapter
    targets: dict[str, dict[str, Any]] = Field(default_factory=dict)  # engine.targets.check_targets


class ArtifactEvent(_Event):
    """A package built (``path`` in the workdir), or stored (``uri`` in the artifact store, path kept)."""

    type: Literal["artifact"] = "artifact"
    kind: Literal["adapter", "full", "deploy", "checkpoint"]
    path: str
    size_bytes: int
    sha256: str
    uri: str | None = None


class HeartbeatEvent(_Event):
    type: Literal["heartbeat"] = "heartbeat"
    stage: Stage | None = None
    step: int | None = None
    elapsed: float


class CostEvent(_Event):
    """What this attempt has cost so far: its rate times the engine's own wall time (``elapsed``, seconds)."""

    type: Literal["cost"] = "cost"
    rate_usd_per_hour: float
    cost_usd: float
    elapsed: float | None = None


EVENT_CLASSES: tuple[type[_Event], ...] = (
    StageEvent, DatasetEvent, MetricsEvent, StatusEvent, CheckpointEvent, LogEvent, WarningEvent, ErrorEvent,
    EvalEvent, ArtifactEvent, HeartbeatEvent, CostEvent,
)  # fmt: skip
EVENT_TYPES = tuple(cls.model_fields["type"].default for cls in EVENT_CLASSES)
AnyEvent = Annotated[
    StageEvent | DatasetEvent | MetricsEvent | StatusEvent | CheckpointEvent | LogEvent | WarningEvent
    | ErrorEvent | EvalEvent | ArtifactEvent | HeartbeatEvent | CostEvent,
    Field(discriminator="type"),
]  # fmt: skip
_ADAPTER: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)


def parse_event(data: str | bytes | dict[str, Any]) -> AnyEvent:
    """One event from a JSON line or dict; ValueError when it is not a valid event."""
    try:
        if isinstance(data, dict):
            return _ADAPTER.validate_python(data)
        return _ADAPTER.validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:])  # after the event type the union is tagged by
        raise ValueError(f"not a lorapod event: {where + ': ' if where else ''}{first['msg']}") from None


class EventWriter:
    """Appends events to a workdir's events.jsonl, numbering them after the last seq already there.

    Several writers (the engine and the pod API, say) may share one file: each takes an exclusive lock per
    line and re-reads the last seq whenever the file grew behind its back.
    """

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self.job_id = job_id
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = -1
        self.seq = 0
        self._thread_lock = threading.Lock()  # flock does not exclude threads sharing this descriptor

    def emit(self, event: _Event) -> _Event:
        """Stamp ``event`` with the next seq, the time and the job id, and append it as one line."""
        with self._thread_lock:
            return self._emit_locked(event)

    def _emit_locked(self, event: _Event) -> _Event:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._fd).st_size
            if size != self._size:
                self.seq = last_seq(self.path)
            self.seq += 1
            stamped = event.model_copy(update={"seq": self.seq, "ts": datetime.now(UTC), "job_id": self.job_id})
            data = (stamped.model_dump_json() + "\n").encode("utf-8")
            os.write(self._fd, data)
            self._size = size + len(data)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return stamped

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def last_seq(path: Path) -> int:
    """The seq of the last complete event line of a file (0 when there is none), reading from the end."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return 0
    with handle:
        end = handle.seek(0, os.SEEK_END)
        window = 65536
        while True:
            start = max(0, end - window)
            handle.seek(start)
            lines = handle.read(end - start).split(b"\n")
            # The last piece is an unfinished line (or empty); the first may be cut by the window.
            candidates = lines[:-1] if start == 0 else lines[1:-1]
            for raw in reversed(candidates):
                try:
                    return int(json.loads(raw)["seq"])
                except (ValueError, KeyError, TypeError):
                    continue
            if start == 0:
                return 0
            window *= 4


def read_events(path: Path, after_seq: int = 0, offset: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """Complete events after ``after_seq`` from byte ``offset`` on, each with the byte offset after it.

    A trailing line without its newline (still being written) is left for the next read.
    """
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        handle.seek(offset)
        position = offset
        for raw in handle:
            if not raw.endswith(b"\n"):
                return
            position += len(raw)
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if int(event.get("seq", 0)) > after_seq:
                yield position, event

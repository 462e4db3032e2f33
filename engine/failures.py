"""Failures, classified: each exception a job can die of becomes a category, a message and an actionable hint.

Where a retry with other values would help (out of memory, a loss that blew up), the suggested values go in
the error event so ``lorapod retry --suggested`` can use them. A failure is never recorded as success: the
runner turns every exception into an error event and a non-zero exit.
"""

from __future__ import annotations

import errno
import math
import traceback
from dataclasses import dataclass, field
from typing import Any

from engine import EngineError, SpecError
from engine.artifacts import ArtifactStoreError
from engine.config import JobSpec


class JobCancelled(EngineError):
    """Raised between stages when a cancel was requested."""


class NonFiniteLoss(EngineError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"the training loss became {loss} at step {step}")
        self.step = step
        self.loss = loss


class SpecMismatch(EngineError):
    """The workdir holds checkpoints of a different job specification."""


@dataclass
class Failure:
    category: str
    message: str
    hint: str
    suggested: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None
    exit_code: int = 1


def _oom_suggestion(spec: JobSpec) -> tuple[str, dict[str, Any]]:
    hp = spec.hyperparameters
    if hp.batch_size > 1:
        suggested: dict[str, Any] = {
            "batch_size": hp.batch_size // 2,
            "gradient_accumulation_steps": hp.gradient_accumulation_steps * 2,
        }
        hint = (
            f"halve batch_size to {suggested['batch_size']} and double gradient_accumulation_steps to "
            f"{suggested['gradient_accumulation_steps']} (same effective batch)"
        )
    else:
        suggested = {"max_seq_length": max(256, hp.max_seq_length // 2)}
        hint = f"batch_size is already 1: shorten max_seq_length to {suggested['max_seq_length']}"
    if not hp.activation_checkpointing:
        suggested["activation_checkpointing"] = True
        hint += ", and turn activation_checkpointing on"
    if not hp.load_in_4bit:
        hint += "; or load the base model in 4-bit (load_in_4bit=true)"
    return hint + ", or rent a GPU with more memory", suggested


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc).lower()
    return (
        isinstance(exc, MemoryError)
        or name == "OutOfMemoryError"
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def _oom_message(exc: BaseException) -> str:
    """The error's own first line when it says what ran out ("CUDA out of memory. Tried to allocate …"), else
    one that does: never "out of memory: CUDA out of memory"."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "memory" in first.lower():
        return first
    return f"out of memory: {first}" if first else f"out of memory ({type(exc).__name__})"


def classify(exc: BaseException, spec: JobSpec | None) -> Failure:
    """The category, message, hint and suggestions for an exception that ended a job."""
    trace = "".join(traceback.format_exception(exc))
    chain = _chain(exc)
    for item in chain:
        failure = _classify_one(item, spec)
        if failure is not None:
            failure.traceback = None if failure.category == "spec" else trace  # the message says it all
            return failure
    return Failure(
        "internal",
        f"{type(exc).__name__}: {exc}",
        "an unexpected error; the traceback and logs/engine.log say where. Retrying the same job resumes from "
        "its newest checkpoint.",
        traceback=trace,
    )


def _classify_one(exc: BaseException, spec: JobSpec | None) -> Failure | None:  # noqa: PLR0911
    name = type(exc).__name__
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, SpecError):
        return Failure("spec", text, "change the setting the message names, then start the job again", exit_code=2)
    if isinstance(exc, SpecMismatch):
        return Failure(
            "spec_mismatch", text, "start the job in a new workdir, or run it with its original spec", exit_code=2
        )
    if isinstance(exc, ArtifactStoreError):
        return Failure(
            "upload",
            text,
            "the packages are safe in the workdir (`lorapod download JOB` copies them out); check the artifact "
            "store settings (artifact_store, SUPABASE_URL, the service-role key, the bucket)",
        )
    if _is_oom(exc):
        hint, suggested = _oom_suggestion(spec) if spec else ("use smaller batches or shorter sequences", {})
        return Failure("out_of_memory", _oom_message(exc), hint, suggested)
    if isinstance(exc, NonFiniteLoss):
        lr = spec.hyperparameters.learning_rate if spec else None
        suggested = {"learning_rate": lr / 2} if lr else {}
        return Failure(
            "nan_loss",
            text,
            "lower the learning rate (suggested: half) or the gradient clipping norm; check the data for empty targets",
            suggested,
        )
    if name in {"DatasetError"} or type(exc).__module__.startswith("engine.dataset"):
        return Failure("dataset", text, "fix the file where the report points (`lorapod dataset validate FILE`)")
    if (
        name == "GatedRepoError"
        or "gated repo" in lowered
        or ("access to model" in lowered and "restricted" in lowered)
    ):
        return Failure(
            "model_gated",
            text.splitlines()[0],
            "accept the model's licence on huggingface.co with the account of your HF_TOKEN, then retry",
        )
    if name in {"RepositoryNotFoundError", "RevisionNotFoundError"} or "is not a valid model identifier" in lowered:
        return Failure(
            "model_not_found", text.splitlines()[0], "check base_model: a Hub id like org/name or a local path"
        )
    if "401" in text and ("huggingface" in lowered or "hf_token" in lowered or "unauthorized" in lowered):
        return Failure("hf_token", text.splitlines()[0], "set HF_TOKEN to a Hugging Face token that can read the model")
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "no space left on device" in lowered:
        return Failure(
            "disk_full",
            text,
            "free disk space or give the pod a larger container disk / network volume (container_disk_gb)",
        )
    if name in {"LocalEntryNotFoundError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectError"} or (
        "connection" in lowered and ("refused" in lowered or "reset" in lowered or "timed out" in lowered)
    ):
        return Failure(
            "network",
            text.splitlines()[0] if text else name,
            "the network failed while loading; retry (downloads resume), or pre-load the weights onto the volume",
        )
    if isinstance(exc, FileNotFoundError):
        return Failure("file_not_found", text, "check the paths in the spec (dataset_path, base_model)")
    return None


def finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)

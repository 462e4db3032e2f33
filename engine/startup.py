"""What ``python -m engine run`` settles before a job runs: its spec, the workdir's claim on it, and logging."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from engine import SpecError, distributed
from engine.config import JobSpec, describe_validation_error
from engine.events import Stage, read_events
from engine.failures import SpecMismatch
from engine.workdir import Workdir


def load_spec(spec_path: Path | None) -> JobSpec:
    """The spec from a file, or from $LORAPOD_SPEC (how a pod receives it); SpecError when invalid."""
    if spec_path is not None:
        try:
            text = spec_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"{spec_path}: {exc.strerror or exc}") from None
    else:
        text = os.environ.get("LORAPOD_SPEC", "")
        if not text:
            raise SpecError("no spec: pass --spec FILE or set LORAPOD_SPEC")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{spec_path or 'LORAPOD_SPEC'}: not JSON (line {exc.lineno}, column {exc.colno})") from None
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{spec_path or 'LORAPOD_SPEC'}:\n{describe_validation_error(exc)}") from None


def setup_logging(workdir: Workdir) -> None:
    workdir.logs.mkdir(parents=True, exist_ok=True)
    # The ranks of a multi-GPU job share the log, each line saying whose it is.
    who = f" rank {distributed.rank()}" if distributed.is_rank_process() else ""
    formatter = logging.Formatter(f"%(asctime)s{who} %(levelname)s %(name)s: %(message)s")
    file_handler = logging.FileHandler(workdir.log_file, encoding="utf-8")
    stream_handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [file_handler, stream_handler]
    for handler in root.handlers:
        handler.setFormatter(formatter)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # library warnings go to the log, not the terminal
    for noisy in ("httpx", "httpcore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import datasets
        import transformers

        transformers.utils.logging.disable_default_handler()
        transformers.utils.logging.enable_propagation()
        transformers.utils.logging.set_verbosity_warning()
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    except ImportError:  # the training stack is not installed: the job fails at loading, with its reason
        pass


def check_same_training(spec: JobSpec, workdir: Workdir) -> None:
    """SpecMismatch when the workdir already belongs to a job with another training spec."""
    if not workdir.spec.exists():
        return
    previous = JobSpec.model_validate_json(workdir.spec.read_text(encoding="utf-8"))
    if previous.training_hash() != spec.training_hash() or (spec.job_id and previous.job_id != spec.job_id):
        raise SpecMismatch(
            f"{workdir.root} holds job {previous.job_id} with a different training spec "
            f"({previous.training_hash()[:12]}…; this one is {spec.training_hash()[:12]}…): use a new workdir"
        )


def already_finished(workdir: Workdir) -> str | None:
    """The terminal stage recorded in the workdir's events, if the job already ended successfully."""
    last = None
    for _, event in read_events(workdir.events):
        if event.get("type") == "stage":
            last = event.get("stage")
    return last if last == Stage.COMPLETED else None

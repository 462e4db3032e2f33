"""What a client report says about one job, gathered from the ledger and the job's own files.

The ledger holds the job, its metrics, events, attempts and packages. eval.json and the dataset manifest hold
more than their events carry (judge, human rating, retention, targets, the source file's checksum): they are
read from the job's workdir when it is on this machine, else from its ``full`` package when that is on this
machine, else the report makes do with the events.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.artifacts import storage_path
from engine.config import JobSpec, flatten
from store.artifacts import list_artifacts
from store.attempts import list_attempts
from store.db import Ledger
from store.events import list_events
from store.jobs import job_spec, short_id
from store.judgements import with_local_results
from store.metrics import metrics_history
from store.models import TrainingFile, TrainingJob

# Settings a client reads as "how it was trained", in this order; the rest of the spec stays in the package.
HYPERPARAMETERS = (
    "lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate", "lr_scheduler_type", "warmup_ratio",
    "num_epochs", "batch_size", "gradient_accumulation_steps", "max_seq_length", "packing", "load_in_4bit",
    "bnb_4bit_quant_type", "bf16", "optimizer", "weight_decay", "max_grad_norm", "seed",
)  # fmt: skip


@dataclass
class Curve:
    """One metric over optimizer steps."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, value: float | None) -> None:
        if value is not None:
            self.steps.append(step)
            self.values.append(value)


@dataclass
class PackageInfo:
    kind: str
    size_bytes: int
    sha256: str | None
    location: str


@dataclass
class JobReport:
    """Everything the report shows of one job."""

    job: TrainingJob
    spec: JobSpec
    dataset: dict[str, Any]
    run: dict[str, Any]
    hyperparameters: dict[str, Any]
    loss: Curve
    eval_loss: Curve
    learning_rate: Curve
    evaluation: dict[str, Any]
    packages: list[PackageInfo]

    @property
    def short_id(self) -> str:
        return short_id(self.job.id)

    @property
    def label(self) -> str:
        return f"{self.job.name} ({self.short_id})" if self.job.name else f"job {self.short_id}"


def gather(ledger: Ledger, job: TrainingJob) -> JobReport:
    """The report's view of ``job``."""
    spec = job_spec(job)
    packages = [
        PackageInfo(a.artifact_type, a.size_bytes, a.sha256, a.storage_path)
        for a in list_artifacts(ledger, job.id)
        if a.artifact_type != "checkpoint"
    ]
    files = _job_files(job, packages)
    loss, eval_loss, learning_rate = Curve(), Curve(), Curve()
    for row in metrics_history(ledger, job.id):
        loss.add(row.step, row.loss)
        eval_loss.add(row.step, row.eval_loss)
        learning_rate.add(row.step, row.learning_rate)
    flat = flatten(spec)
    return JobReport(
        job=job,
        spec=spec,
        dataset=_dataset(ledger, job, spec, files.get("dataset/manifest.json")),
        run=_run(ledger, job),
        hyperparameters={name: flat.get(name) for name in HYPERPARAMETERS},
        loss=loss,
        eval_loss=eval_loss,
        learning_rate=learning_rate,
        evaluation=_evaluation(ledger, job, files.get("eval.json")),
        packages=packages,
    )


def _job_files(job: TrainingJob, packages: list[PackageInfo]) -> dict[str, Any]:
    """eval.json and the dataset manifest, parsed: from the workdir, else from the full package."""
    names = ("eval.json", "dataset/manifest.json")
    found: dict[str, Any] = {}
    if job.workdir and Path(job.workdir).is_dir():
        for name in names:
            found[name] = _read_json(Path(job.workdir) / name)
    full = next((p for p in reversed(packages) if p.kind == "full"), None)
    missing = [name for name in names if found.get(name) is None]
    if missing and full is not None and not full.location.startswith("supabase://"):
        try:
            with zipfile.ZipFile(storage_path(full.location)) as archive:
                for name in missing:
                    if name in archive.namelist():
                        found[name] = json.loads(archive.read(name))
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # a package that cannot be read leaves the report to the events, as for a remote one
    return found


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _last_payload(ledger: Ledger, job: TrainingJob, kind: str) -> dict[str, Any]:
    events = list_events(ledger, job.id, types=[kind])
    return dict(events[-1].payload) if events else {}


def _dataset(ledger: Ledger, job: TrainingJob, spec: JobSpec, manifest: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "file": Path(spec.dataset.dataset_path).name,
        "sha256": spec.dataset.dataset_sha256,
        "format": spec.dataset.dataset_format.value,
        "mode": spec.dataset.dataset_mode.value,
        "eval_fraction": spec.dataset.eval_fraction,
    }
    if job.training_file_id is not None:
        with ledger.read() as session:
            registered = session.get(TrainingFile, job.training_file_id)
        if registered is not None:
            info.update(
                file=registered.name,
                size_bytes=registered.size_bytes,
                conversations=registered.conversation_count,
                trainable_pairs=registered.trainable_pairs,
                format=registered.format,
            )
    if isinstance(manifest, dict):
        source = manifest.get("source") or {}
        counts = manifest.get("counts") or {}
        info.update(
            sha256=source.get("sha256") or info["sha256"],
            size_bytes=source.get("size_bytes", info.get("size_bytes")),
            conversations=counts.get("conversations", info.get("conversations")),
            trainable_pairs=counts.get("trainable_pairs", info.get("trainable_pairs")),
            repairs=manifest.get("repairs") or {},
            warnings=len(manifest.get("warnings") or []),
        )
    prepared = _last_payload(ledger, job, "dataset")
    for key in ("examples", "train_examples", "eval_examples", "tokens", "supervised_tokens", "total_steps"):
        if key in prepared:
            info[key] = prepared[key]
    return info


def _run(ledger: Ledger, job: TrainingJob) -> dict[str, Any]:
    attempts = list_attempts(ledger, job.id)
    seconds = (job.completed_at - job.started_at).total_seconds() if job.started_at and job.completed_at else None
    resources = job.resources or {}
    return {
        "status": job.status,
        "provider": job.provider,
        "gpu": job.gpu_type or ("CPU (this machine)" if job.provider == "local" else None),
        "gpu_count": resources.get("gpu_count", 1),
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "duration_s": seconds,
        "cost_usd": job.actual_cost_usd,
        "estimated_cost_usd": job.estimated_cost_usd,
        "gpu_hours": job.gpu_hours,
        "attempts": len(attempts),
        "rate_usd_per_hour": attempts[-1].rate_usd_per_hour if attempts else None,
    }


def _evaluation(ledger: Ledger, job: TrainingJob, eval_file: Any) -> dict[str, Any]:
    """eval.json when it could be read (it holds everything), else what the eval event carried."""
    event = _last_payload(ledger, job, "eval")
    event.pop("type", None)
    evaluation = {**event, **eval_file} if isinstance(eval_file, dict) else event
    # The judge run from this machine and the ledger's human ratings came after the job: their targets too.
    return with_local_results(ledger, job.id, evaluation)

"""A ledger with fixed jobs, metrics and events for the dashboard's tests and snapshots (same every run)."""

from __future__ import annotations

import contextlib
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import presets
from store.db import Ledger
from store.files import register_file
from store.ingest import ingest
from store.jobs import create_job
from store.models import JobAttempt, TrainingFile, TrainingJob

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# Shown on screens (snapshots), so a fixed path rather than this checkout's.
DATASET = "/data/brightrun-v4-18-conversations.json"


async def workers_done(app: Any) -> None:
    """Wait until no worker runs; one replaced by a newer one in its exclusive group counts as done."""
    from textual.worker import WorkerCancelled

    while running := [worker for worker in app.workers if not worker.is_finished]:
        for worker in running:
            with contextlib.suppress(WorkerCancelled):
                await worker.wait()


def job_uuid(n: int) -> uuid.UUID:
    return uuid.UUID(f"{n:08x}-0000-4000-8000-{n:012x}")


def _events(ts: datetime, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"seq": i, "ts": (ts + timedelta(seconds=i)).isoformat(), **item} for i, item in enumerate(items, start=1)]


def _training(steps: int, total: int, *, base_loss: float = 2.4, gpu: bool = True) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        lr = 2e-4 * 0.5 * (1 + math.cos(math.pi * step / total))
        loss = base_loss * (0.55 + 0.45 * math.exp(-step / (total / 4))) + 0.05 * math.sin(step)
        items.append(
            {
                "type": "metrics", "step": step, "total_steps": total, "epoch": round(3 * step / total, 4),
                "loss": round(loss, 4), "learning_rate": lr, "grad_norm": round(0.3 + 0.1 * math.cos(step / 3), 4),
                "tokens_per_second": 612.0 + step % 7, "gpu_memory_gb": 41.2 if gpu else None,
                "elapsed": step * 6.0, "eta": (total - step) * 6.0,
            }
        )  # fmt: skip
        if step % 20 == 0:
            items.append(
                {"type": "metrics", "step": step, "total_steps": total, "epoch": round(3 * step / total, 4),
                 "eval_loss": round(loss * 1.08, 4), "elapsed": step * 6.0}
            )  # fmt: skip
    return items


def _stages(*names: str) -> list[dict[str, Any]]:
    return [{"type": "stage", "stage": name} for name in names]


def populate(ledger: Ledger, now: datetime = NOW) -> dict[str, uuid.UUID]:
    """Six jobs in every state, a registered training file and an unseen budget alert, as seen at ``now``
    (the jobs started in the 7 hours before it)."""
    tf = register_file(
        ledger, name="brightrun-v4-18-conversations.json", storage_path="/data/brightrun-v4-18-conversations.json",
        sha256="ee492d5d" * 8, format="brightrun-lora-v4", size_bytes=1_367_549, conversation_count=18,
        total_training_pairs=128, trainable_pairs=62, token_count=45_527,
        validation={"ok": True, "format": "brightrun-lora-v4", "examples": 18, "tokens": 45_527, "warnings": [
            {"code": "null_target", "count": 66, "message": "target_response is null in 66 pairs"},
            {"code": "escaped_newlines", "count": 29, "message": "literal backslash-n in 29 texts"},
        ]},
    )  # fmt: skip
    with ledger.write() as session:
        row = session.get(TrainingFile, tf.id)
        assert row is not None
        row.created_at = row.updated_at = now - timedelta(days=2)
        session.add(row)
    balanced = presets.get("balanced")
    runpod = ["provider=runpod"]
    aggressive = presets.get("aggressive")
    plans = [
        (1, "18-conversation proof", balanced.to_spec(DATASET, runpod), "completed", 96, 96, 14.83),
        (2, "aggressive, 24 conversations", aggressive.to_spec(DATASET, runpod), "training", 45, 120, 3.21),
        (3, "big batch", balanced.to_spec(DATASET, [*runpod, "batch_size=8"]), "failed", 3, 96, 1.02),
        (4, "wrong data", balanced.to_spec(DATASET, runpod), "cancelled", 10, 96, 0.44),
        (5, "demo", presets.get("smoke").to_spec(DATASET), "completed", 28, 28, 0.0),
        (6, "lost pod", balanced.to_spec(DATASET, runpod), "interrupted", 40, 96, 2.05),
    ]  # fmt: skip
    ids = {}
    for n, name, preset_spec, status, steps, total, cost in plans:
        job_id = job_uuid(n)
        spec = preset_spec.model_copy(update={"job_id": str(job_id)})
        job = create_job(ledger, spec, name=name, training_file_id=tf.id, estimated_cost_usd=cost * 1.3 or None)
        started = now - timedelta(hours=7 - n)
        with ledger.write() as session:
            row = session.get(TrainingJob, job.id)
            assert row is not None
            row.created_at = started - timedelta(minutes=2)
            row.status = "provisioning"
            session.add(row)
        items = _stages("preprocessing")
        items.append(
            {"type": "dataset", "examples": 18, "train_examples": 16, "eval_examples": 2, "tokens": 45_527,
             "supervised_tokens": 29_706, "packed_sequences": 14, "steps_per_epoch": total // 3, "total_steps": total,
             "epochs": 3}
        )  # fmt: skip
        items += _stages("model_loading", "training")
        items += _training(steps, total, gpu=spec.resources.provider.value == "runpod")
        items += [
            {"type": "checkpoint", "step": s, "epoch": 3 * s / total, "path": f"/w/checkpoint-{s}", "reason": "steps"}
            for s in range(20, steps + 1, 20)
        ]
        if status == "completed":
            items += _stages("evaluating")
            items.append(
                {"type": "eval", "base_perplexity": 9.84, "adapter_perplexity": 6.12, "eval_loss": 1.81, "tokens": 2300,
                 "groups": {"persona": {"anxious_planner": {"base_perplexity": 10.2, "adapter_perplexity": 6.3}}},
                 "generations": [{"prompt": "I feel lost about long-term care insurance.",
                                  "reference": "That makes complete sense, and you are not behind.",
                                  "base": "Long-term care insurance is a type of insurance.",
                                  "adapter": "First, what you're feeling is the most common reaction I see."}]}
            )  # fmt: skip
            items += _stages("packaging")
            items += [
                {"type": "artifact", "kind": kind, "path": f"/data/jobs/{job_id}/packages/{job_id}-{kind}.zip",
                 "size_bytes": 335_544_320, "sha256": f"{n}{kind}".ljust(64, "0")}
                for kind in ("adapter", "full", "deploy")
            ]  # fmt: skip
            items += _stages("uploading", "completed")
        elif status == "failed":
            items.append(
                {"type": "error", "category": "out_of_memory",
                 "message": "CUDA out of memory. Tried to allocate 8.00 GiB",
                 "hint": "halve batch_size to 4 and double gradient_accumulation_steps to 8 (same effective batch)",
                 "traceback": "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory.",
                 "suggested": {"batch_size": 4, "gradient_accumulation_steps": 8}}
            )  # fmt: skip
            items += _stages("failed")
        elif status == "cancelled":
            items.append({"type": "checkpoint", "step": steps, "epoch": 0.3, "path": "/w/c", "reason": "cancel"})
            items.append({"type": "stage", "stage": "cancelled", "message": "cancelled by the user"})
        events = _events(started, items)
        ingest(ledger, job.id, events)
        with ledger.write() as session:
            attempt = JobAttempt(job_id=job.id, number=1, provider=spec.resources.provider.value,
                                 handle={"provider": spec.resources.provider.value, "job_id": str(job_id),
                                         "workdir": f"/data/jobs/{job_id}"},
                                 rate_usd_per_hour=2.69 if spec.resources.provider.value == "runpod" else 0.0,
                                 gpu_count=1, started_at=started, cost_usd=cost,
                                 ended_at=None if status in ("training",) else started + timedelta(minutes=steps / 6),
                                 outcome=None if status == "training" else status)  # fmt: skip
            session.add(attempt)
            row = session.get(TrainingJob, job.id)
            assert row is not None
            if status == "interrupted":
                row.status = "interrupted"
                row.error_category, row.error_message = "interrupted", "the pod disappeared without a terminal event"
                row.updated_at = started + timedelta(minutes=steps / 6)
            row.actual_cost_usd = cost
            row.gpu_type = "NVIDIA H100 80GB HBM3" if spec.resources.provider.value == "runpod" else None
            row.started_at = started
            if row.completed_at is not None:
                row.completed_at = started + timedelta(minutes=steps / 6 + 3)
            if status == "training":
                row.estimated_completion_at = now + timedelta(minutes=42)
            session.add(row)
        ids[name] = job.id
    from store.alerts import raise_alert

    month = now.strftime("%Y-%m")
    raise_alert(ledger, f"budget:{month}:0.8", "budget", f"{month} has spent $330.00, past 80% of the $400.00 budget")
    return ids


def this_month(now: datetime) -> datetime:
    """A moment in ``now``'s month late enough that ``populate``'s jobs all started in that month."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return max(now, start + timedelta(hours=8))


def many_jobs(ledger: Ledger, count: int) -> None:
    """``count`` finished jobs, quickly (one transaction), for paging and speed checks."""
    spec = presets.get("balanced").to_spec(DATASET)
    with ledger.write() as session:
        for i in range(count):
            job_id = uuid.UUID(int=10_000_000 + i)
            session.add(
                TrainingJob(
                    id=job_id, name=f"job {i:05d}", status=("completed", "failed", "cancelled")[i % 3],
                    base_model=spec.base_model, preset="balanced",
                    hyperparameters=spec.hyperparameters.model_dump(mode="json"),
                    resources=spec.resources.model_dump(mode="json"),
                    spec={"dataset": spec.dataset.model_dump(mode="json")},
                    provider="runpod", current_step=96, total_steps=96, actual_cost_usd=round(i % 50 * 0.37, 2),
                    created_at=NOW - timedelta(minutes=i), started_at=NOW - timedelta(minutes=i),
                    completed_at=NOW - timedelta(minutes=i) + timedelta(minutes=40),
                )
            )  # fmt: skip


def training_file(ledger: Ledger) -> TrainingFile:
    from store.files import list_files

    return list_files(ledger)[0]

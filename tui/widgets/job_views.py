"""What the monitor shows of a job as text: event log lines and details, the evaluation and the spec."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from engine.events import (
    AnyEvent,
    ArtifactEvent,
    CheckpointEvent,
    DatasetEvent,
    ErrorEvent,
    EvalEvent,
    HeartbeatEvent,
    LogEvent,
    MetricsEvent,
    StageEvent,
    StatusEvent,
    WarningEvent,
)
from engine.targets import check_targets, target_rows
from store.events import typed_event
from store.jobs import short_id
from store.models import JobEvent, TrainingMetric
from store.status import TERMINAL
from tui.cli.common import duration, seconds_text
from tui.status import look

if TYPE_CHECKING:
    from tui.backend import JobDetail

EVENT_FILTERS = [
    ("all but heartbeats", "-heartbeat"),
    ("all", "*"),
    ("stages", "stage"),
    ("metrics", "metrics"),
    ("checkpoints", "checkpoint"),
    ("warnings", "warning"),
    ("errors", "error"),
    ("logs", "log"),
    ("evaluation", "eval"),
    ("artifacts", "artifact"),
]


def _metrics_line(m: MetricsEvent) -> str:
    parts = [f"step {m.step}/{m.total_steps}"]
    for value, label in ((m.loss, "loss"), (m.eval_loss, "eval"), (m.learning_rate, "lr"), (m.grad_norm, "grad")):
        if value is not None:
            parts.append(f"{label} {value:.4g}")
    if m.tokens_per_second:
        parts.append(f"{m.tokens_per_second:,.0f} tok/s")
    return " · ".join(parts)


def _typed_summary(event: AnyEvent) -> str | None:  # noqa: PLR0911 - one line per kind of event
    if isinstance(event, StageEvent):
        return event.stage + (f" — {event.message}" if event.message else "")
    if isinstance(event, MetricsEvent):
        return _metrics_line(event)
    if isinstance(event, StatusEvent | LogEvent):
        return event.message
    if isinstance(event, CheckpointEvent):
        return f"step {event.step} ({event.reason})"
    if isinstance(event, ErrorEvent):
        return f"{event.category}: {event.message} — select for the traceback and hint"
    if isinstance(event, WarningEvent):
        return f"{event.code}: {event.message}"
    if isinstance(event, EvalEvent):
        return f"perplexity base {event.base_perplexity or 0:.2f} → adapter {event.adapter_perplexity or 0:.2f}"
    if isinstance(event, ArtifactEvent):
        return f"{event.kind} package, {event.size_bytes / 1e6:.1f} MB"
    if isinstance(event, DatasetEvent):
        return f"{event.train_examples} train / {event.eval_examples} held-out examples, {event.total_steps} steps"
    if isinstance(event, HeartbeatEvent):
        return f"alive, {event.stage}, {seconds_text(event.elapsed)}"
    return None


def event_summary(event: JobEvent) -> str:
    """One line for the event log, from the engine's typed event (ingest checked it on its way in)."""
    typed = typed_event(event)
    summary = _typed_summary(typed) if typed is not None else None
    if summary is not None:
        return summary
    # A type this version does not know is kept as it was sent: its message, else its start.
    return str(event.payload.get("message") or json.dumps(event.payload, ensure_ascii=False)[:120])


def event_detail(event: JobEvent) -> Text:
    """The whole event: an error with its hint and traceback, anything else as JSON (no escapes)."""
    text = Text()
    text.append(f"{event.type} · seq {event.seq} · {event.ts.isoformat(timespec='seconds')}\n", style="bold")
    typed = typed_event(event)
    if isinstance(typed, ErrorEvent):
        error = typed
        text.append(f"{error.category}: {error.message}\n", style="bold red")
        text.append(f"hint: {error.hint}\n", style="italic")
        if error.suggested:
            text.append(f"suggested for a retry: {error.suggested}\n")
        text.append("\n" + (error.traceback or "(no traceback)"), style="dim")
    else:  # every field: the typed event's, or as it was sent for a type this version does not know
        fields = (
            typed.model_dump(mode="json", exclude={"type", "seq", "ts", "v", "job_id"}, exclude_none=True)
            if typed is not None
            else event.payload
        )
        text.append(json.dumps(fields, indent=2, default=str, ensure_ascii=False))
    return text


_TARGET_STYLES = {"✓": "green", "✗": "red", "–": "dim"}


def evaluation_view(evaluation: EvalEvent | None) -> RenderableType:
    """Base vs adapter perplexity, overall and per group, and the sample generations."""
    if evaluation is None:
        return Text("No evaluation yet: it runs after training, on the held-out conversations.", style="dim")
    targets = Table(title="Targets", title_justify="left")
    for column in ("target", "status", "measured"):
        targets.add_column(column)
    for name, status, summary in target_rows(check_targets(evaluation.model_dump())):
        targets.add_row(name, Text(status, style=_TARGET_STYLES.get(status.split()[0], "")), summary)
    best = evaluation.best_checkpoint
    packaged = (
        Text(f"Packaged: checkpoint-{best['step']}, the lowest eval loss ({_fmt(best['eval_loss'])})")
        if best
        else Text("")
    )
    table = Table(title="Held-out perplexity (lower is better)", title_justify="left")
    table.add_column("")
    table.add_column("base", justify="right")
    table.add_column("adapter", justify="right")
    table.add_row("overall", _fmt(evaluation.base_perplexity), _fmt(evaluation.adapter_perplexity))
    for group, values in evaluation.groups.items():
        for name, pair in values.items():
            table.add_row(f"{group}: {name}", _fmt(pair.get("base_perplexity")), _fmt(pair.get("adapter_perplexity")))
    parts: list[Any] = [targets, packaged, table]
    for index, generation in enumerate(evaluation.generations, start=1):
        sample = Table(title=f"Generation {index}", title_justify="left", show_lines=True, expand=True)
        sample.add_column("prompt / reference", ratio=1)
        sample.add_column("base", ratio=1)
        sample.add_column("adapter", ratio=1)
        sample.add_row(
            f"{generation.get('prompt')}\n\n— reference: {generation.get('reference')}",
            generation.get("base") or "(nothing)",
            generation.get("adapter") or "(nothing)",
        )
        parts.append(sample)
    return Group(*parts)


def details_view(detail: JobDetail) -> RenderableType:
    """The spec, the attempts and the packages of a job."""
    job = detail.job
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    if detail.spec is not None:
        spec = detail.spec
        table.add_row("dataset", spec.dataset.dataset_path)
        table.add_row("sha256", spec.dataset.dataset_sha256 or "—")
        hp = spec.hyperparameters
        table.add_row(
            "LoRA",
            f"r {hp.lora_r}, alpha {hp.lora_alpha}, dropout {hp.lora_dropout}, {', '.join(hp.target_modules)}",
        )
        table.add_row(
            "training",
            f"lr {hp.learning_rate:g}, {hp.num_epochs} epochs, "
            f"batch {hp.batch_size} × {hp.gradient_accumulation_steps}, seq {hp.max_seq_length}",
        )
        table.add_row(
            "weights",
            f"{'4-bit ' + hp.bnb_4bit_quant_type if hp.load_in_4bit else 'full precision'}, bf16 {hp.bf16}",
        )
        table.add_row(
            "resources",
            f"{spec.resources.provider}, {spec.resources.gpu_count} × {', '.join(spec.resources.gpu_types[:2])}",
        )
    table.add_row("workdir", job.workdir or "—")
    for attempt in detail.attempts:
        ended = attempt.ended_at.strftime("%H:%M:%S") if attempt.ended_at else "running"
        table.add_row(
            f"attempt {attempt.number}",
            f"{attempt.started_at:%Y-%m-%d %H:%M:%S} → {ended}, ${attempt.cost_usd:,.2f}, "
            f"{attempt.outcome or 'running'}",
        )
    for artifact in detail.artifacts:
        table.add_row(f"package {artifact.artifact_type}", f"{artifact.storage_path}\nsha256 {artifact.sha256}")
    if job.parent_job_id:
        table.add_row("retry of", short_id(job.parent_job_id))
    return table


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def ended_at(detail: JobDetail) -> datetime | None:
    """When the job stopped running: its end, or for an interrupted one its last attempt's (no clock runs on)."""
    job = detail.job
    if job.completed_at is not None or job.status != "interrupted":
        return job.completed_at
    ends = [a.ended_at for a in detail.attempts if a.ended_at is not None]
    return max(ends) if ends else job.updated_at


def stats_text(detail: JobDetail, metrics: list[TrainingMetric], now: datetime) -> Text:
    """ETA, cost, time, speed and the latest losses; for an ended job its final figures and why it ended."""
    job = detail.job
    ended = job.status in TERMINAL or job.status == "interrupted"
    latest = next((m for m in reversed(metrics) if m.loss is not None), None)
    last_eval = next((m for m in reversed(metrics) if m.eval_loss is not None), None)
    tps = next((m.tokens_per_second for m in reversed(metrics) if m.tokens_per_second), None)
    parts = []
    if not ended and job.estimated_completion_at is not None and job.status == "training":
        parts.append(f"ETA {seconds_text(max((job.estimated_completion_at - now).total_seconds(), 0))}")
    parts.append(f"{'cost' if ended else 'cost so far'} ${job.actual_cost_usd:,.2f}")
    if job.estimated_cost_usd:
        parts.append(f"estimate ${job.estimated_cost_usd:,.2f}")
    parts.append(f"{'ran' if ended else 'running'} {duration(job.started_at, ended_at(detail) or now)}")
    if tps:
        parts.append(f"{tps:,.0f} tokens/s")
    if latest is not None:
        parts.append(f"loss {latest.loss:.4f}")
    if last_eval is not None:
        parts.append(f"eval {last_eval.eval_loss:.4f}")
    stats = Text(" · ".join(parts))
    if job.status in ("failed", "interrupted", "cancelled") and job.error_message:
        # The status word is shown above; a failure's category says more, a cancel's reason stands alone.
        category = job.error_category if job.status == "failed" and job.error_category else None
        stats.append("\n" + (f"{category}: " if category else "") + job.error_message, style=look(job.status).color)
        if job.error_hint:
            stats.append(f"\nhint: {job.error_hint}", style="italic")
    return stats

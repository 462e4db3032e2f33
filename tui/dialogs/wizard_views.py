"""What the new-job wizard shows: the dataset tree, the dataset's check, and the review before a start."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import DirectoryTree

from engine.config import JobSpec, Provider

if TYPE_CHECKING:
    from tui.backend import DatasetInspection


class DatasetTree(DirectoryTree):
    """Folders, and the files lorapod reads (.json, .jsonl)."""

    def filter_paths(self, paths: Any) -> Any:
        return [p for p in paths if (p.is_dir() and not p.name.startswith(".")) or p.suffix in (".json", ".jsonl")]


def preview_text(preview: Any) -> Text:
    """The example as the model sees it; trained runs highlighted and underlined (so not by colour alone)."""
    text = Text()
    for segment in preview.segments:
        text.append(segment.text, style="bold underline green" if segment.trained else "dim")
    return text


def dataset_report(inspection: DatasetInspection, under: str) -> Group:
    """The check of a dataset: verdict, report, statistics under the chosen preset, and the first example."""
    report = inspection.report
    parts: list[Any] = []
    verdict = Text()
    if report.get("ok"):
        verdict.append("✔ trainable", style="bold green")
    else:
        verdict.append("✖ cannot be trained — fix these errors first", style="bold red")
    parts.append(verdict)
    parts.append(Text(inspection.report_text))
    if inspection.stats:
        stats = inspection.stats
        table = Table(title="Statistics", title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("measured under", under)
        for key in ("train_examples", "eval_examples", "train_tokens", "packed_sequences", "steps_per_epoch"):
            value = stats.get(key)
            table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
        parts.append(table)
    if inspection.preview is not None:
        parts.append(
            Text(
                "\nThe first example as the model sees it — trained tokens underlined "
                "(it learns to stop at <|eot_id|>):",
                style="bold",
            )
        )
        parts.append(preview_text(inspection.preview))
    return Group(*parts)


def review_view(
    spec: JobSpec,
    inspection: Any,
    estimate: Any,
    problem: str,
    month: Any,
    decision: Any,
    budget: float,
    local: str | None = None,
) -> Group:
    """What will run, what it should cost and take, and every warning, before anything starts."""
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    hp = spec.hyperparameters
    table.add_row("dataset", f"{spec.dataset.dataset_path}")
    table.add_row(
        "preset",
        f"{spec.preset}: r {hp.lora_r}, lr {hp.learning_rate:g}, {hp.num_epochs} epochs, "
        f"batch {hp.batch_size} × {hp.gradient_accumulation_steps}",
    )
    table.add_row("model", spec.base_model)
    table.add_row(
        "runs on",
        f"{spec.resources.provider.value}"
        + (
            f", {spec.resources.gpu_count} × {spec.resources.gpu_types[0]} ({spec.resources.cloud_type.value})"
            if spec.resources.provider is Provider.RUNPOD
            else " (this machine)"
        ),
    )
    stats = inspection.stats or {}
    table.add_row(
        "work", f"{stats.get('train_tokens', 0):,} tokens per epoch, {stats.get('steps_per_epoch')} steps per epoch"
    )
    if estimate is not None:
        low, high = estimate.cost
        table.add_row(
            "estimate",
            f"{estimate.hours[0]:.1f}–{estimate.hours[1]:.1f} h, ${low:,.2f}–${high:,.2f} "
            f"({estimate.throughput_source})",
        )
        after = month.spent + month.committed + high
        table.add_row(
            "budget",
            f"${month.spent:,.2f} spent of ${budget:,.2f}; up to ${after:,.2f} ({after / budget:.0%}) with this job"
            if budget
            else "no monthly budget",
        )
    elif local is not None:
        table.add_row("estimate", local)
    else:
        table.add_row("estimate", problem or "—")
    parts: list[Any] = [table]
    warnings = Text()
    for warning in inspection.report.get("warnings") or []:
        warnings.append(f"⚠ {warning['code']} ×{warning['count']}: {warning['message']}\n", style="yellow")
    if stats.get("steps_per_epoch") and int(stats["steps_per_epoch"]) < 10:
        warnings.append(
            f"⚠ only {stats['steps_per_epoch']} optimizer steps per epoch: the schedule barely acts\n",
            style="yellow",
        )
    for alert in decision.alerts:
        warnings.append(f"⚠ {alert}\n", style="yellow")
    for reason in decision.reasons:
        warnings.append(f"✖ refused by the budget: {reason}\n", style="bold red")
    if warnings:
        parts.append(warnings)
    return Group(*parts)


def launch_text(launch: dict[str, Any]) -> Text:
    """What ``lorapod run --plan`` shows of the pod: image, GPU walk, disk, memory and what refuses it."""
    text = Text()
    if "create_request" in launch:
        stock = " (RunPod's image: lorapod installs itself at start)" if launch.get("stock_image") else ""
        text.append(f"pod image  {launch['image']}{stock}\n")
        walk = ", ".join(g["id"] + ("" if g["fits"] else " ✖ does not fit") for g in launch["gpu_types"])
        text.append(f"GPU types  {walk}\n")
        disk = launch["disk"]
        volume = disk["network_volume"]
        where = f"network volume {volume['id']} ({volume['size_gb']} GB)" if volume else f"{disk['volumeInGb']} GB"
        text.append(f"disk       needs {disk['needed_gb']} GB: {where}\n")
        memory = launch.get("gpu_memory")
        if memory:
            text.append(f"GPU memory about {memory['needed_gb']:g} GB per GPU\n")
        env = ", ".join(launch["create_request"]["env"])
        text.append(f"env names  {env}\n", style="dim")
    for problem in launch.get("problems", []):
        text.append(f"✖ refused: {problem}\n", style="bold red")
    return text

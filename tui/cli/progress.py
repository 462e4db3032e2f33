"""The live view of a following job: a redrawn panel on a terminal, plain lines when piped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from store.models import TrainingJob
from tui.cli.common import job_title, seconds_text
from tui.status import STEPS, label, look

if TYPE_CHECKING:
    from rich.console import RenderableType

    from remote.supervisor import Update


@dataclass
class JobView:
    """What the display knows, updated from the supervisor's rounds."""

    job: TrainingJob
    stages: list[str] = field(default_factory=list)
    loss: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None
    eta: float | None = None
    last: str = ""
    lines: list[str] = field(default_factory=list)  # for plain output
    supervising: bool = True

    def update(self, update: Update) -> None:
        self.job = update.job
        if update.supervising != self.supervising:
            self._say(
                "this process now supervises the job"
                if update.supervising
                else "watching: another lorapod process supervises this job (the background supervisor, say); "
                "showing what it records"
            )
        self.supervising = update.supervising
        for event in update.events:
            self._event(event)

    def _event(self, event: dict[str, Any]) -> None:  # noqa: PLR0912 — one branch per event type
        kind = event["type"]
        if kind == "stage":
            self.stages.append(event["stage"])
            message = f" — {event['message']}" if event.get("message") else ""
            self._say(f"stage: {event['stage']}{message}")
        elif kind == "metrics":
            if event.get("loss") is not None:
                self.loss = event["loss"]
            if event.get("eval_loss") is not None:
                self.eval_loss = event["eval_loss"]
                self._say(f"eval loss {event['eval_loss']:.4f} at step {event['step']}")
            self.tokens_per_second = event.get("tokens_per_second") or self.tokens_per_second
            self.eta = event.get("eta")
        elif kind == "status":
            self._say(event["message"])
        elif kind == "dataset":
            self._say(
                f"dataset: {event['train_examples']} train / {event['eval_examples']} held-out examples, "
                f"{event['tokens']:,} tokens, {event['steps_per_epoch']} steps per epoch, {event['total_steps']} in all"
            )
        elif kind == "checkpoint":
            self._say(f"checkpoint at step {event['step']} ({event['reason']})")
        elif kind == "warning":
            self._say(f"warning: {event['message']}")
        elif kind == "error":
            self._say(f"error ({event['category']}): {event['message']}\n  hint: {event['hint']}")
        elif kind == "eval":
            base, tuned = event.get("base_perplexity"), event.get("adapter_perplexity")
            if base is not None and tuned is not None:
                self._say(f"held-out perplexity: base {base:.2f} → adapter {tuned:.2f}")
        elif kind == "artifact" and not event.get("uri"):  # a stored copy is announced by its log line
            self._say(f"package {event['kind']}: {event['path']} ({event['size_bytes'] / 1e6:.1f} MB)")
        elif kind == "log":
            self._say(event["message"])

    def _say(self, text: str) -> None:
        self.last = text
        self.lines.append(text)

    def take_lines(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines

    def progress_line(self) -> str:
        job = self.job
        parts = [label(job.status)]
        if job.total_steps:
            share = job.current_step / job.total_steps
            parts.append(f"step {job.current_step} / {job.total_steps} ({share:.1%})")
            parts.append(f"epoch {job.current_epoch:.2f}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.tokens_per_second:
            parts.append(f"{self.tokens_per_second:,.0f} tok/s")
        if self.eta is not None and job.status == "training":
            parts.append(f"ETA {seconds_text(self.eta)}")
        parts.append(f"cost ${job.actual_cost_usd:,.2f}")
        return " · ".join(parts)

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        job = self.job
        current = job.stage or job.status
        steps = []
        for name, covers in STEPS:
            if current in covers:
                steps.append(f"[bold]● {name}[/]")
            elif any(stage in covers for stage in self.stages) or job.status == "completed":
                steps.append(f"[green]✔ {name}[/]")
            else:
                steps.append(f"[grey50]○ {name}[/]")
        color = look(job.status).color
        total = job.total_steps or 0
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=job.current_step if total else 0, width=50),
            Text(f"{job.current_step / total:.0%}" if total else ""),
        )
        rows: list[RenderableType] = [
            Text(job_title(job), style="bold"),
            Text.from_markup("  ".join(steps)),
            Text.assemble((self.progress_line(), color)),
            bar,
        ]
        if self.eval_loss is not None:
            rows.append(Text(f"eval loss {self.eval_loss:.4f}"))
        if self.last:
            rows.append(Text(self.last, style="grey62", overflow="ellipsis", no_wrap=True))
        if not self.supervising:
            rows.append(Text("(another lorapod process supervises this job; showing what it records)", style="grey50"))
        return Group(*rows)


def print_plain(view: JobView) -> None:
    for line in view.take_lines():
        click.echo(line)

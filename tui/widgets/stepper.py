"""The stage stepper: Preprocessing → Loading → Training → Evaluating → Packaging, done / current / to come."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.status import STEPS


class StageStepper(Static):
    """Each step marked ✔ (done), ● (current) or ○ (to come) — never by colour alone."""

    def show(self, status: str, stage: str | None, seen: set[str]) -> None:
        text = Text()
        current = stage or status
        finished = status == "completed"
        for index, (name, covers) in enumerate(STEPS):
            if index:
                text.append(" → ", style="dim")
            if current in covers and not finished:
                style = "bold red" if status == "failed" else "bold yellow" if status == "interrupted" else "bold"
                mark = "✖" if status == "failed" else "⚠" if status == "interrupted" else "●"
                text.append(f"{mark} {name}", style=style)
            elif finished or seen.intersection(covers):
                text.append(f"✔ {name}", style="green")
            else:
                text.append(f"○ {name}", style="dim")
        self.update(text)

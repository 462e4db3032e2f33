"""The stage stepper: Preprocessing → Loading → Training → Evaluating → Packaging, done / current / to come."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.status import STEPS, look

# How the step a job ended on is marked, by the way it ended (an icon and a style, never colour alone).
ENDED_ON: dict[str, str] = {"failed": "bold red", "cancelled": "bold dark_orange", "interrupted": "bold yellow"}


def ended_on(status: str, stage: str | None, seen: set[str]) -> int | None:
    """The index of the step a failed, cancelled or interrupted job stopped in (its last one reached)."""
    if status not in ENDED_ON:
        return None
    reached = [i for i, (_, covers) in enumerate(STEPS) if stage in covers or seen.intersection(covers)]
    return max(reached) if reached else 0


class StageStepper(Static):
    """Each step marked ✔ (done), ● (current), ○ (to come), or where the job ended: ✖ failed, ⊘ cancelled,
    ⚠ interrupted — never by colour alone."""

    def show(self, status: str, stage: str | None, seen: set[str]) -> None:
        text = Text()
        current = stage or status
        finished = status == "completed"
        stopped = ended_on(status, stage, seen)
        for index, (name, covers) in enumerate(STEPS):
            if index:
                text.append(" → ", style="dim")
            if stopped is not None:
                if index < stopped:
                    text.append(f"✔ {name}", style="green")
                elif index == stopped:
                    text.append(f"{look(status).icon} {name} ({status})", style=ENDED_ON[status])
                else:
                    text.append(f"○ {name}", style="dim")
            elif current in covers and not finished:
                text.append(f"● {name}", style="bold")
            elif finished or seen.intersection(covers):
                text.append(f"✔ {name}", style="green")
            else:
                text.append(f"○ {name}", style="dim")
        self.update(text)

"""How a job's status looks on a terminal: an icon and a word (never colour alone), and a colour for both.

Shared by the command line and the dashboard; imports nothing of Textual.
"""

from __future__ import annotations

from typing import NamedTuple


class StatusLook(NamedTuple):
    icon: str
    word: str
    color: str  # a Rich / Textual colour name; dropped under NO_COLOR


LOOKS: dict[str, StatusLook] = {
    "queued": StatusLook("◌", "queued", "grey62"),
    "provisioning": StatusLook("◔", "provisioning", "cyan"),
    "preprocessing": StatusLook("◑", "preprocessing", "cyan"),
    "model_loading": StatusLook("◑", "loading", "cyan"),
    "training": StatusLook("▶", "training", "dodger_blue2"),
    "evaluating": StatusLook("◕", "evaluating", "medium_purple"),
    "uploading": StatusLook("⇡", "uploading", "medium_purple"),
    "completed": StatusLook("✔", "completed", "green"),
    "failed": StatusLook("✖", "failed", "red"),
    "cancelled": StatusLook("⊘", "cancelled", "dark_orange"),
    "interrupted": StatusLook("⚠", "interrupted", "yellow"),
}

# Cells the longest label takes: tables give Status this width so no status is ever cut.
STATUS_WIDTH = max(len(f"{item.icon} {item.word}") for item in LOOKS.values())

# The stepper the monitor shows, and which engine stages each step covers.
STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("Preprocessing", ("preprocessing",)),
    ("Loading", ("model_loading",)),
    ("Training", ("training",)),
    ("Evaluating", ("evaluating",)),
    ("Packaging", ("packaging", "uploading")),
]


def look(status: str) -> StatusLook:
    return LOOKS.get(status, StatusLook("?", status, "white"))


def label(status: str) -> str:
    """ "✔ completed": the icon and the word, for plain text."""
    item = look(status)
    return f"{item.icon} {item.word}"


def markup(status: str) -> str:
    """The label as Rich markup, coloured."""
    item = look(status)
    return f"[{item.color}]{item.icon} {item.word}[/]"

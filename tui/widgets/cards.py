"""A card: a label over one large figure, with an optional note."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class Card(Static):
    DEFAULT_CSS = """
    Card {
        border: round $primary-darken-2;
        padding: 0 1;
        height: 5;
        min-width: 18;
    }
    """

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label
        self.border_title = label

    def show(self, value: str, note: str = "", style: str = "bold") -> None:
        text = Text(value, style=style)
        if note:
            text.append("\n" + note, style="dim")
        self.update(text)

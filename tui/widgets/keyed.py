"""Keyboard-first pieces shared by every screen: tables that move like a pager, and a footer that keeps Help
and Quit in sight however narrow the terminal."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Footer as TextualFooter
from textual.widgets._footer import FooterKey

from tui.widgets.table import Table

# Shown first in every footer, so a narrow terminal cuts screen actions rather than these.
PINNED_KEYS = ("question_mark", "q")


class Footer(TextualFooter):
    """Textual's footer with ? Help and q Quit first."""

    def compose(self) -> Any:
        keys = list(super().compose())
        pinned = [key for key in keys if isinstance(key, FooterKey) and key.key in PINNED_KEYS]
        yield from pinned + [key for key in keys if key not in pinned]


class NavTable(Table):
    """A row table that also moves with j/k, g/G and Home/End (first and last row)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False, id="table.down", tooltip="Next row"),
        Binding("k", "cursor_up", "Up", show=False, id="table.up", tooltip="Previous row"),
        Binding("g,home", "first_row", "First", show=False, id="table.first", tooltip="First row"),
        Binding("G,end", "last_row", "Last", show=False, id="table.last", tooltip="Last row"),
    ]

    def action_first_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

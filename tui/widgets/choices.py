"""Radio buttons whose state shows in the glyph itself (● chosen, ○ not), not only in its colour."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import RadioButton


class Choice(RadioButton):
    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = "●" if self.value else "○"
        return super()._button

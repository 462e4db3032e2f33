"""Retry a finished job: the same configuration, or the one its failure suggested — shown as a diff first."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, RadioSet, Static

from engine.config import FieldChange
from tui.errors import ReportsWorkerErrors
from tui.widgets.choices import Choice
from tui.widgets.table import Table


class RetryDialog(ReportsWorkerErrors, ModalScreen[bool | None]):
    """Dismisses with True (suggested values), False (the same configuration) or None (not now)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="retry.close", tooltip="Do not retry")]

    def __init__(self, job_id: str, label: str, has_suggestion: bool) -> None:
        super().__init__()
        self.job_id = job_id
        self.label = label
        self.has_suggestion = has_suggestion

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(f"Retry {self.label} as a new job", classes="dialog-title")
            with RadioSet(id="mode"):
                yield Choice("The same configuration", value=not self.has_suggestion, id="same")
                yield Choice(
                    "The values its failure suggested", value=self.has_suggestion, id="suggested",
                    disabled=not self.has_suggestion,
                )  # fmt: skip
            yield Table(id="diff", cursor_type="none")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start the retry", variant="primary", id="start")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Table).add_columns("field", "before", "retry")
        self.show_diff()

    def _suggested(self) -> bool:
        return self.query_one("#suggested", Choice).value

    @on(RadioSet.Changed)
    def _changed(self) -> None:
        self.show_diff()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def show_diff(self) -> None:
        _, changes = self.app.backend.retry_plan(self.job_id, suggested=self._suggested())  # type: ignore[attr-defined]
        self.app.call_from_thread(self._fill, changes)

    def _fill(self, changes: list[FieldChange]) -> None:
        table = self.query_one(Table)
        table.clear()
        for change in changes:
            table.add_row(change.field, str(change.before), str(change.after))
        if not changes:
            table.add_row("(no changes)", "", "")

    @on(Button.Pressed, "#start")
    def _start(self) -> None:
        self.dismiss(self._suggested())

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

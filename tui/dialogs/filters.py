"""More filters for the jobs table: a date range, a training file, a model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from store.jobs import JobQuery
from store.models import TrainingFile
from tui.errors import ReportsWorkerErrors


def _date(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)


class FiltersDialog(ReportsWorkerErrors, ModalScreen[dict[str, Any] | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="filters.close", tooltip="Close without changes")]

    def __init__(self, query: JobQuery) -> None:
        super().__init__()
        self.current = query

    def compose(self) -> ComposeResult:
        q = self.current
        with Vertical(classes="dialog"):
            yield Static("Filter jobs", classes="dialog-title")
            yield Label("Created from / to (YYYY-MM-DD, to is inclusive)")
            with Horizontal(classes="row"):
                yield Input(
                    q.created_from.strftime("%Y-%m-%d") if q.created_from else "", placeholder="from", id="from"
                )
                to = (q.created_to - timedelta(days=1)).strftime("%Y-%m-%d") if q.created_to else ""
                yield Input(to, placeholder="to", id="to")
            yield Label("Model")
            yield Select[str]([], prompt="any model", id="model")
            yield Label("Training file")
            yield Select[str]([], prompt="any training file", id="file")
            yield Static(id="problem", classes="error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply", variant="primary", id="apply")
                yield Button("Clear all", id="clear")
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.load_choices()

    @work(thread=True, exit_on_error=False)
    def load_choices(self) -> None:
        models, files = self.app.backend.models_and_files()  # type: ignore[attr-defined]
        self.app.call_from_thread(self._choices, models, files)

    def _choices(self, models: list[str], files: list[TrainingFile]) -> None:
        model = self.query_one("#model", Select)
        model.set_options([(m.rsplit("/", 1)[-1], m) for m in models])
        if self.current.base_model in models:
            model.value = self.current.base_model
        file = self.query_one("#file", Select)
        file.set_options([(f.name, str(f.id)) for f in files])
        if self.current.training_file_id is not None:
            file.value = str(self.current.training_file_id)

    @on(Button.Pressed, "#apply")
    def _apply(self) -> None:
        try:
            start = _date(self.query_one("#from", Input).value)
            end = _date(self.query_one("#to", Input).value)
        except ValueError:
            self.query_one("#problem", Static).update("dates are YYYY-MM-DD, e.g. 2026-11-01")
            return
        import uuid

        model = self.query_one("#model", Select).value
        file = self.query_one("#file", Select).value
        self.dismiss(
            {
                "created_from": start,
                "created_to": end + timedelta(days=1) if end else None,
                "base_model": model if isinstance(model, str) else None,
                "training_file_id": uuid.UUID(file) if isinstance(file, str) else None,
            }
        )

    @on(Button.Pressed, "#clear")
    def _clear(self) -> None:
        self.dismiss({"created_from": None, "created_to": None, "base_model": None, "training_file_id": None})

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)

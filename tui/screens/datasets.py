"""Datasets: the registered training files, their validation summary and statistics, and whether each file still
holds the bytes it was registered with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from store.files import FileState
from store.models import TrainingFile
from tui.errors import ReportsWorkerErrors
from tui.widgets.keyed import Footer, NavTable

if TYPE_CHECKING:
    from tui.app import LorapodApp


# How a file's contents read beside its name: never colour alone.
CONTENTS = {
    FileState.UNCHANGED: Text("✔ unchanged", style="green"),
    FileState.CHANGED: Text("⚠ changed since registered", style="bold yellow"),
    FileState.MISSING: Text("✖ missing", style="bold red"),
    FileState.ELSEWHERE: Text("· not local", style="dim"),
}


class DatasetsScreen(ReportsWorkerErrors, Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="datasets.back", tooltip="Back")]

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, tuple[TrainingFile, FileState]] = {}

    @property
    def lorapod(self) -> LorapodApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="datasets-body"):
            yield NavTable(id="files", cursor_type="row")
            with VerticalScroll(id="file-detail-scroll"):
                yield Static(id="file-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(
            "Name", "Contents", "Format", "Convs", "Trainable", "Tokens", "Warnings", "Registered"
        )
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load(self) -> None:
        files = self.lorapod.backend.datasets()
        self.app.call_from_thread(self._show, files)

    def _show(self, files: list[tuple[TrainingFile, FileState]]) -> None:
        if not self.is_mounted:  # a late answer for a screen already closed
            return
        table = self.query_one(DataTable)
        table.clear()
        self.files = {str(f.id): (f, state) for f, state in files}
        for f, state in files:
            warnings = sum(int(w.get("count", 0)) for w in (f.validation or {}).get("warnings") or [])
            tokens = f"{f.token_count:,}" if f.token_count else "—"
            table.add_row(
                f.name,
                CONTENTS[state],
                f.format,
                str(f.conversation_count),
                str(f.trainable_pairs),
                tokens,
                str(warnings),
                f"{f.created_at:%Y-%m-%d}",
                key=str(f.id),
            )
        if not files:
            self.query_one("#file-detail", Static).update(
                Text("No training files yet: a file is registered when a job starts on it (n: new job).", style="dim")
            )

    @on(DataTable.RowHighlighted)
    def _detail(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is None or event.row_key.value not in self.files:
            return
        f, state = self.files[str(event.row_key.value)]
        validation = f.validation or {}
        table = Table(show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        rows: list[tuple[str, str | Text]] = [
            ("file", f.storage_path),
            ("sha256", f.sha256),
            ("contents", CONTENTS[state]),
            ("format", f.format),
            ("size", f"{f.size_bytes / 1e6:.2f} MB"),
            ("conversations", str(f.conversation_count)),
            ("pairs", f"{f.total_training_pairs} ({f.trainable_pairs} with a target)"),
            ("examples", str(validation.get("examples", "—"))),
            ("tokens", f"{f.token_count:,}" if f.token_count else "—"),
            ("valid", "✔ yes" if validation.get("ok") else "✖ no"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        warnings = Table(title="Warnings", title_justify="left")
        warnings.add_column("code")
        warnings.add_column("count", justify="right")
        warnings.add_column("what")
        for warning in validation.get("warnings") or []:
            warnings.add_row(str(warning.get("code")), str(warning.get("count")), str(warning.get("message")))
        from rich.console import Group

        self.query_one("#file-detail", Static).update(Group(table, warnings))

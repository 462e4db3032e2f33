"""Download a package: which one, and into which folder."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioSet, Static

from tui.widgets.choices import Choice

PACKAGES = {
    "adapter": "adapter — the LoRA weights, tokenizer and chat template",
    "full": "full — the adapter plus spec, events, metrics, evaluation and logs",
    "deploy": "deploy — the adapter plus inference.py, pinned requirements and a README",
}


class DownloadDialog(ModalScreen[tuple[str, Path] | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="download.close", tooltip="Do not download"),
        Binding("enter", "submit", "Download", priority=True, id="download.go", tooltip="Download the chosen package"),
    ]

    def __init__(self, label: str, available: list[str], folder: Path) -> None:
        super().__init__()
        self.label = label
        self.available = available
        self.folder = folder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Static(f"Download a package of {self.label}", classes="dialog-title")
            with RadioSet(id="kind"):
                for kind, text in PACKAGES.items():
                    yield Choice(text, value=kind == "deploy", id=kind, disabled=kind not in self.available)
            yield Label("Into the folder")
            yield Input(str(self.folder), id="folder")
            yield Static(
                "The file's sha256 is checked against the ledger, then every file against its manifest.", classes="dim"
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Download", variant="primary", id="go")
                yield Button("Cancel", id="cancel")

    def action_submit(self) -> None:
        """Enter downloads from anywhere in the dialog: on a package it picks that one first; on a button it
        presses that button (Cancel cancels)."""
        focused = self.focused
        if isinstance(focused, Button):
            focused.press()
            return
        if isinstance(focused, RadioSet):
            focused.action_toggle_button()
        self._go()

    @on(Button.Pressed, "#go")
    def _go(self) -> None:
        pressed = self.query_one(RadioSet).pressed_button
        kind = pressed.id if pressed is not None and pressed.id else "deploy"
        self.dismiss((kind, Path(self.query_one("#folder", Input).value).expanduser()))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class FolderDialog(ModalScreen[Path | None]):
    """Ask for a folder (exports)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close", id="folder.close", tooltip="Cancel")]

    def __init__(self, title: str, folder: Path) -> None:
        super().__init__()
        self.title_text = title
        self.folder = folder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Input(str(self.folder), id="folder")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export", variant="primary", id="go")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#go")
    def _go(self) -> None:
        self.dismiss(Path(self.query_one(Input).value).expanduser())

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

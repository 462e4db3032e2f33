"""Rate a job blind: one held-out prompt and two replies, A and B, in random order; a, b, t or s to rate, and
only then which reply was the adapter's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Static

from engine import LorapodError
from store.jobs import short_id
from store.ratings import adapter_label, choice_from_key
from tui.cli.evaluate import human_line
from tui.errors import ReportsWorkerErrors
from tui.widgets.keyed import Footer

if TYPE_CHECKING:
    from tui.app import LorapodApp


class RateScreen(ReportsWorkerErrors, Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="rate.back", tooltip="Back; ratings so far are kept"),
        Binding("a", "rate('a')", "A is better", id="rate.a", tooltip="Reply A is the better one"),
        Binding("b", "rate('b')", "B is better", id="rate.b", tooltip="Reply B is the better one"),
        Binding("t", "rate('t')", "Tie", id="rate.tie", tooltip="Neither reply is better"),
        Binding("s", "skip", "Skip", id="rate.skip", tooltip="Skip this prompt without rating it"),
        Binding("n", "next", "Next", id="rate.next", tooltip="After a rating: the next prompt"),
    ]

    def __init__(self, job_id: str, rater: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.rater = rater
        self.pairs: list[dict[str, Any]] = []
        self.queue: list[int] = []  # prompts this rater has not rated, in order
        self.index: int | None = None  # the prompt on screen
        self.revealed = False  # rated: the labels now say which reply was whose

    @property
    def lorapod(self) -> LorapodApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="rate-heading")
        with VerticalScroll(id="rate-prompt-box"):
            yield Static(id="rate-prompt")
        with Horizontal(id="rate-replies"):
            with VerticalScroll(classes="rate-reply"):
                yield Static(id="rate-label-a", classes="rate-label")
                yield Static(id="rate-reply-a")
            with VerticalScroll(classes="rate-reply"):
                yield Static(id="rate-label-b", classes="rate-label")
                yield Static(id="rate-reply-b")
        yield Static(id="rate-status")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, name="rate", exit_on_error=False)
    def load(self) -> None:
        try:
            job, pairs, rated, summary = self.lorapod.backend.rating_session(self.job_id, self.rater)
        except LorapodError as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._loaded, str(job.id), pairs, rated, summary)

    def _failed(self, message: str) -> None:
        self.query_one("#rate-status", Static).update(f"✗ {message}")

    def _loaded(self, job_id: str, pairs: list[dict[str, Any]], rated: set[int], summary: Any) -> None:
        self.job_id = job_id
        self.pairs = pairs
        self.queue = [i for i in range(len(pairs)) if i not in rated]
        self.query_one("#rate-status", Static).update(human_line(summary))
        self._advance()

    def _label(self, index: int) -> str:
        return adapter_label(self._uuid(), index, self.rater)

    def _uuid(self) -> Any:
        import uuid

        return uuid.UUID(self.job_id)

    def _advance(self) -> None:
        self.revealed = False
        self.index = self.queue.pop(0) if self.queue else None
        heading = self.query_one("#rate-heading", Static)
        if self.index is None:
            heading.update(f"Job {short_id(self.job_id)}: nothing left for {self.rater} to rate")
            for widget in ("#rate-prompt", "#rate-reply-a", "#rate-reply-b", "#rate-label-a", "#rate-label-b"):
                self.query_one(widget, Static).update("")
            return
        pair = self.pairs[self.index]
        heading.update(
            f"Job {short_id(self.job_id)} · rater {self.rater} · prompt {self.index + 1} of {len(self.pairs)} · "
            f"{len(self.queue)} more after this"
        )
        user = next((m["content"] for m in reversed(pair.get("prompt") or []) if m["role"] == "user"), "")
        self.query_one("#rate-prompt", Static).update(user.strip())
        adapter, base = pair.get("adapter") or "(empty reply)", pair.get("base") or "(empty reply)"
        first, second = (adapter, base) if self._label(self.index) == "A" else (base, adapter)
        self.query_one("#rate-label-a", Static).update("A")
        self.query_one("#rate-label-b", Static).update("B")
        self.query_one("#rate-reply-a", Static).update(first.strip())
        self.query_one("#rate-reply-b", Static).update(second.strip())

    def action_rate(self, key: str) -> None:
        if self.index is None or self.revealed:
            return
        label = self._label(self.index)
        choice = choice_from_key(key, label)
        if choice is None:
            return
        self.revealed = True
        self.record(self.index, choice, label)
        base_label = "B" if label == "A" else "A"
        self.query_one(f"#rate-label-{label.lower()}", Static).update(f"{label} — the adapter's reply")
        self.query_one(f"#rate-label-{base_label.lower()}", Static).update(f"{base_label} — the base model's reply")
        verdict = {"adapter": "✓ you preferred the adapter", "base": "✗ you preferred the base", "tie": "= a tie"}
        self.query_one("#rate-status", Static).update(f"{verdict[choice]} — n for the next prompt")

    @work(thread=True, name="rate", exit_on_error=False)
    def record(self, index: int, choice: str, label: str) -> None:
        summary = self.lorapod.backend.rate(self.job_id, index, self.rater, choice, label)
        self.app.call_from_thread(self._recorded, summary)

    def _recorded(self, summary: Any) -> None:
        if self.is_mounted and self.revealed:
            status = self.query_one("#rate-status", Static)
            status.update(f"{status.content} · {human_line(summary)}")

    def action_skip(self) -> None:
        if self.index is not None and not self.revealed:
            self._advance()

    def action_next(self) -> None:
        if self.revealed:
            self._advance()

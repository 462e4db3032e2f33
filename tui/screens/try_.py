"""The Try screen: a prompt put to a job's base model and to its adapter, the two replies streamed side by side.

The model runs outside the dashboard (remote.playground): a local job's in a subprocess, a RunPod job's on a
pod whose rate is shown, and agreed to, before it starts. Opening and asking run in workers that only post
messages; the pod stays up after the screen closes, until the background supervisor finds it idle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Header, Input, Static

from engine import LorapodError
from store.jobs import short_id
from tui.errors import ReportsWorkerErrors
from tui.messages import ReplyDone, ReplyGrew
from tui.widgets.keyed import Footer

if TYPE_CHECKING:
    from remote.playground import Reply, Session
    from remote.runpod.playground import Quote
    from tui.app import LorapodApp

SIDES = ("base", "adapter")


class TryScreen(ReportsWorkerErrors, Screen[None]):
    max_new_tokens = 128  # a reply's length bound: well inside RunPod's 100-second proxy limit on a pod
    BINDINGS = [
        Binding(
            "escape", "app.pop_screen", "Back", id="try.back", tooltip="Back; a playground pod stays up until idle"
        ),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.session: Session | None = None
        self.updates = dict.fromkeys(SIDES, 0)  # pieces shown per side for the last prompt

    @property
    def lorapod(self) -> LorapodApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="try-title")
        with Horizontal(id="try-replies"):
            for side, title in zip(SIDES, ("base model", "adapter"), strict=True):
                with VerticalScroll(id=f"try-{side}", classes="try-pane") as pane:
                    pane.border_title = title
                    yield Static("", id=f"try-{side}-text")
        yield Static("◌ starting the playground…", id="try-status")
        yield Input(placeholder="a prompt for both models, then enter", id="try-prompt", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self._quote()

    def _title(self, job: Any) -> None:
        self.query_one("#try-title", Static).update(f"Try job {short_id(job.id)} · {job.base_model} · {job.provider}")

    # --- opening -----------------------------------------------------------------------------------------

    @work(thread=True, group="try-open", exclusive=True, name="try", exit_on_error=False)
    def _quote(self) -> None:
        self.app.call_from_thread(self._title, self.lorapod.backend.job(self.job_id))
        try:
            quote = self.lorapod.backend.playground_quote(self.job_id)
        except LorapodError as exc:  # no adapter, no API key…: said on the screen
            self.app.call_from_thread(self._status, f"✗ cannot start: {exc}")
            return
        if quote is None or quote.reuse is not None:
            self._open(quote)
        else:
            self.app.call_from_thread(self._ask_rate, quote)

    def _ask_rate(self, quote: Quote) -> None:
        from tui.dialogs.confirm import ConfirmDialog

        def answered(yes: bool | None) -> None:
            if yes:
                self._status(f"◌ starting a playground pod at ${quote.rate_usd_per_hour:.2f}/h…")
                self.run_worker(
                    lambda: self._open(quote), thread=True, group="try-open", name="try", exit_on_error=False
                )
            else:
                self._status("no pod started: escape goes back")

        question = f"Start a playground pod at ${quote.rate_usd_per_hour:.2f}/h?"
        self.app.push_screen(ConfirmDialog(question, quote.describe(), yes="Start it", danger=False), answered)

    def _open(self, quote: Quote | None) -> None:
        try:
            session = self.lorapod.backend.open_playground(self.job_id, quote)
        except LorapodError as exc:
            self.app.call_from_thread(self._status, f"✗ the playground did not start: {exc}")
            return
        self.session = session
        self.app.call_from_thread(self._ready)

    def _ready(self) -> None:
        if not self.is_attached:  # left before it came up
            self._close()
            return
        self._status("● ready: type a prompt")
        prompt = self.query_one("#try-prompt", Input)
        prompt.disabled = False
        prompt.focus()

    def _status(self, text: str) -> None:
        if self.is_attached:
            self.query_one("#try-status", Static).update(text)

    # --- asking ------------------------------------------------------------------------------------------

    @on(Input.Submitted, "#try-prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text or self.session is None:
            return
        event.input.disabled = True
        self.updates = dict.fromkeys(SIDES, 0)
        for side in SIDES:
            self.query_one(f"#try-{side}-text", Static).update("")
        self._status(f"◌ asking both: {text[:60]}")
        self._ask(text)

    @work(thread=True, group="try-ask", exclusive=True, name="try", exit_on_error=False)
    def _ask(self, prompt: str) -> None:
        from remote.playground import ask_both

        session = self.session
        assert session is not None
        texts = dict.fromkeys(SIDES, "")

        def piece(side: str, text: str) -> None:
            texts[side] += text
            self.post_message(ReplyGrew(side, texts[side]))

        try:
            replies = ask_both(session, prompt, max_new_tokens=self.max_new_tokens, on_piece=piece)
        except LorapodError as exc:
            self.post_message(ReplyDone("", error=str(exc)))
            return
        self.post_message(ReplyDone(_summary(replies)))

    def on_reply_grew(self, message: ReplyGrew) -> None:
        self.updates[message.side] += 1
        self.query_one(f"#try-{message.side}-text", Static).update(message.text)

    def on_reply_done(self, message: ReplyDone) -> None:
        self._status(f"✗ {message.error}" if message.error else f"✓ done · {message.summary}")
        prompt = self.query_one("#try-prompt", Input)
        prompt.disabled = False
        prompt.value = ""
        prompt.focus()

    def reply_text(self, side: str) -> str:
        return str(self.query_one(f"#try-{side}-text", Static).content)

    # --- closing -----------------------------------------------------------------------------------------

    def on_unmount(self) -> None:
        self._close()

    def _close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            import threading

            threading.Thread(target=session.close, name="playground-close", daemon=True).start()


def _summary(replies: dict[Any, Reply]) -> str:
    parts = []
    for side in SIDES:
        reply = replies[side]
        first = f", first token {reply.first_token_s * 1000:.0f} ms" if reply.first_token_s is not None else ""
        parts.append(f"{side}: {reply.tokens} tokens{first}")
    return " · ".join(parts)

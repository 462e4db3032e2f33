"""The lorapod dashboard: a Textual app that follows every live job while it is open.

The app only wires things together: screens live in ``tui/screens``, dialogs in ``tui/dialogs``, all I/O in
``tui.backend.Backend`` called from workers (never on the UI thread), live jobs followed by
``tui.following.Followers``, a failed worker reported by ``tui.errors``.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.screen import Screen

from store.jobs import short_id
from store.settings import Paths
from store.status import TERMINAL
from tui.backend import Backend
from tui.commands import LorapodCommands
from tui.errors import ReportsWorkerErrors, log_to_file
from tui.following import Followers
from tui.messages import JobChanged, JobFinished, LedgerSynced

# How often the dashboard looks for live jobs it does not follow yet (started from another shell, say).
DISCOVER_EVERY_S = 2.0
FIRST_PAGE_WAIT_S = 3.0  # what waits for the first page starts after this at the latest


class LorapodApp(ReportsWorkerErrors, App[None]):
    TITLE = "lorapod"
    SUB_TITLE = "LoRA fine-tuning on rented GPUs"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {LorapodCommands}
    BINDINGS = [
        Binding("n", "new_job", "New job", id="app.new", tooltip="Start a new training job (the wizard)"),
        Binding("j", "show_jobs", "Jobs", show=False, id="app.jobs", tooltip="The jobs table"),
        Binding("dollar_sign", "show_costs", "Costs", key_display="$", id="app.costs", tooltip="Spending and budget"),
        Binding("t", "show_datasets", "Datasets", id="app.datasets", tooltip="Registered training files"),
        Binding("question_mark", "help", "Help", key_display="?", id="app.help", tooltip="Keys and concepts"),
        Binding("q", "quit", "Quit", id="app.quit", tooltip="Leave; running jobs keep running"),
    ]

    def __init__(
        self, backend: Backend | None = None, *, follow: bool = True, after_first_page: Callable[[], None] | None = None
    ) -> None:
        super().__init__()
        self.backend = backend or Backend()
        self.followers = Followers(self, self.backend)
        self.follow_jobs = follow
        self.marked: set[str] = set()  # jobs marked for compare or export, shared by every screen
        self._after_first_page = after_first_page

    def on_mount(self) -> None:
        from tui.screens.jobs import JobsScreen

        self.push_screen(JobsScreen())
        if self._after_first_page is not None:  # a ledger that cannot be read shows no page: not forever
            self.set_timer(FIRST_PAGE_WAIT_S, self.first_page_shown)
        if self.follow_jobs:
            self.followers.start_all()
            self.set_interval(2.0, self.check_alerts)
            self.set_interval(DISCOVER_EVERY_S, self.followers.discover)
            interval = self.backend.settings.sync_interval_s
            if self.backend.sync_state is not None and interval > 0:
                self.sync_ledger()
                self.set_interval(interval, self.sync_ledger)

    def first_page_shown(self) -> None:
        """The jobs table has its first page: what was held back so as not to slow it down starts now."""
        start, self._after_first_page = self._after_first_page, None
        if start is not None:
            start()

    # --- messages from followers ---------------------------------------------------------------------

    def on_job_changed(self, message: JobChanged) -> None:
        # Screens listen too: forward to the one on top (the app receives worker-posted messages first).
        if (top := self._top()) is not None:
            top.post_message(JobChanged(message.job_id, message.status, message.step))

    def _top(self) -> Screen[Any] | None:
        """The screen on top, or None while the app is closing (a follower's message can arrive then)."""
        return self.screen_stack[-1] if self.screen_stack else None

    def on_job_finished(self, message: JobFinished) -> None:
        severity: SeverityLevel = (
            "information" if message.status == "completed" else "error" if message.status == "failed" else "warning"
        )
        text = f"{message.label} {message.status}" + (f"\n{message.reason}" if message.reason else "")
        self.notify(text, title="Job finished", severity=severity, timeout=8 if not message.reason else 15)

    @work(thread=True, group="alerts", exclusive=True, exit_on_error=False)
    def check_alerts(self) -> None:
        for alert in self.backend.take_alerts():
            severity: SeverityLevel = "error" if alert.level == "error" else "warning"
            self.call_from_thread(
                self.notify,
                alert.message,
                title="Budget" if alert.kind == "budget" else "Alert",
                severity=severity,
                timeout=12,
            )

    @work(thread=True, group="sync", exclusive=True, exit_on_error=False)
    def sync_ledger(self) -> None:
        """Push and pull with Supabase in the background; offline, say so once and keep trying."""
        state = self.backend.sync_state
        if state is None:
            return
        was_offline = state.problem is not None
        state = self.backend.sync()
        if state.problem is not None and not was_offline:
            self.call_from_thread(self.notify, state.problem, title="Sync", severity="warning", timeout=12)
        elif state.problem is None and was_offline:
            self.call_from_thread(self.notify, "the ledger is in sync with Supabase again", title="Sync", timeout=6)
        self.call_from_thread(self._synced, state.received if state.problem is None else 0)

    def _synced(self, received: int) -> None:
        if (top := self._top()) is not None:
            top.post_message(LedgerSynced(received))

    # --- navigation ------------------------------------------------------------------------------------

    def action_show_jobs(self) -> None:
        from tui.screens.jobs import JobsScreen

        while len(self.screen_stack) > 2:
            self.pop_screen()
        if not isinstance(self.screen, JobsScreen):
            self.push_screen(JobsScreen())
        if self._after_first_page is not None:  # a ledger that cannot be read shows no page: not forever
            self.set_timer(FIRST_PAGE_WAIT_S, self.first_page_shown)

    def action_show_costs(self) -> None:
        from tui.screens.costs import CostsScreen

        self.push_screen(CostsScreen())

    def action_show_datasets(self) -> None:
        from tui.screens.datasets import DatasetsScreen

        self.push_screen(DatasetsScreen())

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def open_job(self, job_id: str) -> None:
        from tui.screens.monitor import MonitorScreen

        self.push_screen(MonitorScreen(job_id))

    def open_rate(self, job_id: str, rater: str | None = None) -> None:
        import getpass

        from tui.screens.rate import RateScreen

        self.push_screen(RateScreen(job_id, rater or getpass.getuser()))

    def open_compare(self, job_ids: list[str]) -> None:
        from tui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(job_ids))

    # --- job actions (shared by the jobs screen, the monitor and the command palette) ---------------------

    def action_new_job(self) -> None:
        from tui.dialogs.wizard import NewJobWizard

        def started(spec: Any) -> None:
            if spec is not None:
                self.notify("Starting the job…", title="New job", timeout=3)
                self.start_job(spec)

        self.push_screen(NewJobWizard(), started)

    # Each action runs in a worker; one that fails is shown by tui.errors.report_error (the worker's name says
    # which action failed), and reading the ledger before a dialog happens in a worker too.

    @work(thread=True, group="actions", name="start", exit_on_error=False)
    def start_job(self, spec: Any) -> None:
        submission = self.backend.start(spec)
        self.call_from_thread(self._started, str(submission.job.id))

    def _started(self, job_id: str) -> None:
        self.notify(f"job {job_id[:8]} started", title="Started", timeout=6)
        self.followers.follow(job_id)
        self.open_job(job_id)

    @work(thread=True, group="actions", name="cancel", exit_on_error=False)
    def cancel_job(self, job_id: str) -> None:
        job = self.backend.job(job_id)
        self.call_from_thread(self._confirm_cancel, job)

    def _confirm_cancel(self, job: Any) -> None:
        from tui.dialogs.confirm import ConfirmDialog

        if job.status in TERMINAL:
            self.notify(f"job {short_id(job.id)} is already {job.status}", severity="warning")
            return
        question = f"Cancel job {short_id(job.id)} ({job.status})?"
        detail = (
            f"${job.actual_cost_usd:,.2f} spent so far. The engine finishes its step, saves a checkpoint and stops."
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel(str(job.id))

        self.push_screen(ConfirmDialog(question, detail, yes="Cancel the job"), answered)

    @work(thread=True, group="actions", name="cancel", exit_on_error=False)
    def _cancel(self, job_id: str) -> None:
        job = self.backend.cancel(job_id)
        if job.status == "cancelled":  # nothing was running: the ledger alone changed
            message = f"job {short_id(job.id)} had no live engine: it is cancelled, with nothing to checkpoint"
            self.call_from_thread(self.notify, message, title="Cancelled")
        else:
            message = f"cancel requested for job {short_id(job.id)}: the engine checkpoints, then stops"
            self.call_from_thread(self.notify, message, title="Cancelling")
        self.call_from_thread(self._changed, job)

    def _changed(self, job: Any) -> None:
        """Screens show what an action did at once, not at their next refresh."""
        if (top := self._top()) is not None:
            top.post_message(JobChanged(str(job.id), str(job.status), job.current_step))

    def resume_job(self, job_id: str) -> None:
        self.notify("Resuming the job…", title="Resume", timeout=3)
        self._resume(job_id)

    @work(thread=True, group="actions", name="resume", exit_on_error=False)
    def _resume(self, job_id: str) -> None:
        job = self.backend.resume(job_id)  # BudgetRefused and "not interrupted" say why in their message
        self.call_from_thread(self._changed, job)
        self.call_from_thread(
            self.notify, f"job {short_id(job.id)} resumed from its newest checkpoint", title="Resumed"
        )
        self.call_from_thread(self.followers.follow, str(job.id))

    @work(thread=True, group="actions", name="retry", exit_on_error=False)
    def retry_job(self, job_id: str) -> None:
        job, has_suggestion = self.backend.retry_choice(job_id)
        self.call_from_thread(self._choose_retry, job, has_suggestion)

    def _choose_retry(self, job: Any, has_suggestion: bool) -> None:
        from tui.dialogs.retry import RetryDialog

        if job.status not in TERMINAL:
            self.notify("only a finished job can be retried (cancel it first)", severity="warning")
            return
        job_id = str(job.id)

        def chosen(suggested: bool | None) -> None:
            if suggested is not None:
                self._retry(job_id, suggested)

        self.push_screen(RetryDialog(job_id, f"job {short_id(job.id)}", has_suggestion), chosen)

    @work(thread=True, group="actions", name="retry", exit_on_error=False)
    def _retry(self, job_id: str, suggested: bool) -> None:
        submission = self.backend.retry(job_id, suggested=suggested)
        self.call_from_thread(self._started, str(submission.job.id))

    def try_job(self, job_id: str) -> None:
        """The Try screen: a prompt to the job's base model and adapter, replies side by side."""
        from tui.screens.try_ import TryScreen

        self.push_screen(TryScreen(job_id))

    @work(thread=True, group="actions", name="download", exit_on_error=False)
    def download(self, job_id: str) -> None:
        job = self.backend.job(job_id)
        kinds = [a.artifact_type for a in self.backend.artifacts(job.id)]
        self.call_from_thread(self._choose_download, job, kinds)

    def _choose_download(self, job: Any, kinds: list[str]) -> None:
        from tui.dialogs.download import DownloadDialog

        if not kinds:
            self.notify("this job has no packages yet", severity="warning")
            return
        job_id = str(job.id)

        def chosen(result: tuple[str, Path] | None) -> None:
            if result is not None:
                self._download(job_id, *result)

        self.push_screen(DownloadDialog(f"job {short_id(job.id)}", kinds, Path.cwd() / "downloads"), chosen)

    @work(thread=True, group="actions", name="download", exit_on_error=False)
    def _download(self, job_id: str, kind: str, folder: Path) -> None:
        self.call_from_thread(self.notify, f"downloading the {kind} package…", timeout=3)
        target = self.backend.download(job_id, kind, folder)
        message = f"{target}\nsha256 verified against the ledger; every file verified against the manifest"
        self.call_from_thread(self.notify, message, title="Downloaded", timeout=12)

    def export_metrics(self, job_ids: list[uuid.UUID]) -> None:
        from tui.dialogs.download import FolderDialog

        def chosen(folder: Path | None) -> None:
            if folder is not None:
                self._export(job_ids, folder)

        self.push_screen(
            FolderDialog(f"Export the metrics of {len(job_ids)} job(s) as CSV into", Path.cwd() / "exports"), chosen
        )

    @work(thread=True, group="actions", name="export", exit_on_error=False)
    def _export(self, job_ids: list[uuid.UUID], folder: Path) -> None:
        written = [
            (job_id, self.backend.export_metrics(job_id, folder / f"{short_id(job_id)}-metrics.csv"))
            for job_id in job_ids
        ]
        rows = sum(count for _, count in written)
        self.call_from_thread(
            self.notify, f"{len(written)} file(s), {rows} rows, in {folder}", title="Exported", timeout=8
        )

    @work(thread=True, group="actions")
    def write_report(self, job_ids: list[str]) -> None:
        """The client report of the jobs (several: a comparison), written in a worker; a toast gives its path."""
        self.call_from_thread(self.notify, f"writing the report of {len(job_ids)} job(s)…", timeout=3)
        try:
            path = self.backend.report(job_ids)
        except Exception as exc:
            self.call_from_thread(self.notify, str(exc), title="Report not written", severity="error", timeout=15)
            return
        message = f"{path}\nopen it in a browser, or print it to PDF"
        self.call_from_thread(self.notify, message, title="Report written", timeout=15)

    def copy_storage_path(self, path: str) -> None:
        self.copy_to_clipboard(path)
        self.notify(f"copied: {path}", title="Storage path", timeout=6)


def run(backend: Backend | None = None) -> None:
    """Open the dashboard (``lorapod`` with no arguments), with the background supervisor running so every live
    job is followed after it closes too."""
    import threading

    def after_first_page() -> None:
        settle_memory()
        # Started once the jobs table shows its first page: a fresh supervisor (a Python start and its imports)
        # started before or beside the dashboard took the CPU its first paint needed.
        threading.Thread(target=_supervise, args=(app.backend.settings.paths,), name="supervisor", daemon=True).start()

    app = LorapodApp(backend, after_first_page=after_first_page)
    log_to_file(app.backend.settings.paths.data_dir)
    app.run()


def settle_memory() -> None:
    """What the first page took to build (the imports, the screens) lives as long as the dashboard: frozen out
    of the garbage collector's sight, a full collection no longer walks it. Those walks were the 90–130 ms
    stalls that now and then made a 10,000-job sort or search miss 100 ms."""
    gc.collect()
    gc.freeze()


def _supervise(paths: Paths) -> None:
    from remote.daemon import ensure_running

    ensure_running(paths)

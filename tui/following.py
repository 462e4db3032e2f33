"""Following live jobs while the dashboard is open: one worker thread per job, each a supervisor follower.

On start the dashboard catches up on what every live job did while it was closed, then follows each one;
new jobs started from the dashboard are followed from their first event. Followers post messages only.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from textual.worker import Worker, get_current_worker

from store.jobs import short_id
from store.status import TERMINAL
from tui.messages import JobChanged, JobFinished

if TYPE_CHECKING:
    from textual.app import App

    from remote.supervisor import Update
    from tui.backend import Backend


def ended_why(job: Any) -> str:
    """A finished job's reason as a toast shows it: a failure keeps its code (the error category)."""
    if job.status == "completed" or not job.error_message:
        return ""
    code = job.error_category if job.status == "failed" and job.error_category else None
    return f"{code}: {job.error_message}" if code else str(job.error_message)


class Followers:
    def __init__(self, app: App[Any], backend: Backend) -> None:
        self.app = app
        self.backend = backend
        self.workers: dict[str, Worker[None]] = {}

    def start_all(self) -> None:
        """Catch up on every live job, then follow each one (runs in a worker)."""
        self.app.run_worker(self._start_all, thread=True, group="follow", name="catch-up", exit_on_error=False)

    def _start_all(self) -> None:
        # A failure is shown by tui.errors; the dashboard stays up and the jobs table still shows the ledger.
        self.backend.catch_up()
        for job_id in self.backend.followable_job_ids():
            self.app.call_from_thread(self.follow, str(job_id))

    def discover(self) -> None:
        """Follow live jobs this dashboard does not follow yet: started or resumed from another shell, by the
        background supervisor, or by a colleague whose rows sync brought in (runs in a worker)."""
        self.app.run_worker(self._discover, thread=True, group="discover", name="discover", exclusive=True,
                            exit_on_error=False)  # fmt: skip

    def _discover(self) -> None:
        try:
            followable = self.backend.followable_job_ids()
        except Exception:  # the ledger is busy or gone for a moment: the next round looks again
            return
        for job_id in followable:
            current = self.workers.get(str(job_id))
            if current is None or not current.is_running:
                self.app.call_from_thread(self.follow, str(job_id))

    def follow(self, job_id: str) -> None:
        """Follow one job until it ends (no-op when already followed)."""
        current = self.workers.get(job_id)
        if current is not None and current.is_running:
            return
        self.workers[job_id] = self.app.run_worker(
            lambda: self._follow(job_id), thread=True, group="follow", name=f"follow:{job_id[:8]}", exit_on_error=False
        )

    def _follow(self, job_id: str) -> None:
        worker = get_current_worker()
        last = {"status": "", "step": -1}

        def on_update(update: Update) -> None:
            job = update.job
            if job.status != last["status"] or job.current_step != last["step"] or update.events:
                self.app.post_message(JobChanged(job_id, job.status, job.current_step))
            if job.status != last["status"] and job.status in TERMINAL and last["status"]:
                self.app.post_message(JobFinished(job_id, job.status, f"job {short_id(job.id)}", ended_why(job)))
            last["status"], last["step"] = job.status, job.current_step

        # A job this installation cannot reach fails this worker alone: tui.errors says so, once.
        self.backend.follow(uuid.UUID(job_id), on_update, should_stop=lambda: worker.is_cancelled)

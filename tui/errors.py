"""The dashboard's one error policy: a failed worker never closes the app.

Every worker runs with ``exit_on_error=False``; when one fails, ``on_worker_state_changed`` (mixed into the app
and every screen or dialog that runs workers) hands its error to ``report_error``. A ``LorapodError`` was raised
on purpose and its message is written for the user: it becomes a toast titled with what failed and the error's
code (its class name). Anything else is a bug: it is logged with its traceback (``dashboard.log`` in the data
dir), and a toast says where to find it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from textual.worker import Worker, WorkerState

from engine import LorapodError

log = logging.getLogger("lorapod.dashboard")

# A failed action's toast title, by the name of the worker that ran it.
FAILED = {
    "start": "Could not start the job",
    "cancel": "Could not cancel",
    "resume": "Could not resume",
    "retry": "Could not retry",
    "download": "Download refused",
    "export": "Export refused",
    "follow": "Following",
    "catch-up": "Catching up",
    "try": "Playground",
    "rate": "Could not rate",
}
LOG_FILE = "dashboard.log"


def report_error(app: Any, error: BaseException, worker_name: str = "") -> None:
    """Show a LorapodError's message as a toast (with its code); log anything else with its traceback."""
    kind, _, subject = worker_name.partition(":")  # "follow:1a2b3c4d": following that job
    action = " ".join(part for part in (FAILED.get(kind, ""), subject) if part)
    if isinstance(error, LorapodError):
        title = f"{action or 'Error'} ({type(error).__name__})"
        app.notify(str(error), title=title, severity="error", timeout=15)
        return
    log.error("unexpected error in worker %r", worker_name, exc_info=(type(error), error, error.__traceback__))
    app.notify(
        f"{type(error).__name__}: {error}\nan unexpected error: its traceback is in {LOG_FILE}",
        title=action or "Unexpected error",
        severity="error",
        timeout=15,
    )


class ReportsWorkerErrors:
    """Mixed into the app, screens and dialogs: a worker of theirs that fails goes to ``report_error``."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            report_error(cast(Any, self).app, event.worker.error, event.worker.name)


def log_to_file(data_dir: Path) -> None:
    """Send the dashboard's log to ``data_dir/dashboard.log`` (a terminal app cannot print it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(data_dir / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

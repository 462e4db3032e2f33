"""What the job commands share: opening the ledger and supervisor, finding a job by id prefix, formatting."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import click

from store.db import Ledger
from store.jobs import get_job, short_id
from store.models import TrainingJob, utcnow
from store.recovery import open_ledger as open_installed_ledger
from store.settings import Settings, load_settings

if TYPE_CHECKING:
    from remote.supervisor import Supervisor


@dataclass
class Context:
    settings: Settings
    ledger: Ledger

    def supervisor(self) -> Supervisor:
        from remote.supervisor import Supervisor

        return Supervisor(self.ledger, self.settings)

    def job(self, job_id: str) -> TrainingJob:
        """The job an id or unique id prefix names (JobNotFound, a StoreError, otherwise)."""
        return get_job(self.ledger, job_id)


def open_context() -> Context:
    settings = load_settings()
    return Context(settings, open_ledger(settings))


def open_ledger(settings: Settings) -> Ledger:
    """The installation's ledger; what opening it had to repair (an emptied file, jobs rebuilt) goes to stderr."""
    ledger = open_installed_ledger(settings.paths)
    if ledger.recovery:
        click.secho(f"warning: {ledger.recovery}", err=True, fg="yellow")
    return ledger


JOB_ARGUMENT = click.argument("job_id", metavar="JOB")


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "—"
    seconds = int(((end or utcnow()) - start).total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "—"
    minutes, secs = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def job_title(job: TrainingJob) -> str:
    preset = f" · {job.preset}" if job.preset else ""
    return (
        f"job {short_id(job.id)}{' ' + repr(job.name) if job.name else ''}{preset} · {job.base_model} · {job.provider}"
    )


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask on a terminal; refuse to guess when there is none (the caller says to pass --yes)."""
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} — no terminal to ask on: pass --yes")
    return click.confirm(question, default=False)

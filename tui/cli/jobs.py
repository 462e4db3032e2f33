"""``lorapod jobs``: the ledger's jobs, filtered, sorted and paged."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from store.db import Ledger
from store.jobs import SORT_KEYS, JobQuery, JobRow, list_jobs, short_id
from store.models import utcnow
from store.settings import Settings, load_settings
from store.status import GROUPS, JobStatus
from tui.cli.common import open_ledger
from tui.cli.output import emit_json, money, print_table

STATUS_CHOICES = [*GROUPS, *(s.value for s in JobStatus if s.value not in GROUPS)]


def job_summary(job: JobRow) -> dict[str, Any]:
    """A job as plain data for --json output."""
    return {
        "id": str(job.id),
        "short_id": short_id(job.id),
        "name": job.name,
        "status": job.status,
        "stage": job.stage,
        "preset": job.preset,
        "base_model": job.base_model,
        "provider": job.provider,
        "training_file_id": str(job.training_file_id) if job.training_file_id else None,
        "training_file": job.training_file_name,
        "current_step": job.current_step,
        "total_steps": job.total_steps,
        "current_epoch": job.current_epoch,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
        "estimated_cost_usd": job.estimated_cost_usd,
        "actual_cost_usd": job.actual_cost_usd,
        "error_category": job.error_category,
        "parent_job_id": str(job.parent_job_id) if job.parent_job_id else None,
    }


def _catch_up_active(ledger: Ledger, settings: Settings) -> None:
    """Bring running jobs up to date first: a detached job may have moved on since anyone last looked."""
    active = list_jobs(ledger, JobQuery(group="active", limit=50)).jobs
    if not active:
        return
    from remote.supervisor import Supervisor

    Supervisor(ledger, settings).catch_up(job.id for job in active)


def _duration(job: JobRow) -> str:
    if job.started_at is None:
        return "—"
    end: datetime = job.completed_at or utcnow()
    seconds = int((end - job.started_at).total_seconds())
    return (
        f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m {seconds % 60:02d}s"
    )


def _progress(job: JobRow) -> str:
    if not job.total_steps:
        return "—"
    return f"{job.current_step}/{job.total_steps}"


@click.command()
@click.option("--status", "status", type=click.Choice(STATUS_CHOICES), default="all", help="A group or one status.")
@click.option("--search", default=None, help="Id prefix, or text in the name, model or preset.")
@click.option("--sort", type=click.Choice(SORT_KEYS), default="created_at", show_default=True)
@click.option("--asc", is_flag=True, help="Oldest / smallest first.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs(status: str, search: str | None, sort: str, asc: bool, limit: int, as_json: bool) -> None:
    """List jobs in the ledger, newest first."""
    settings = load_settings()
    query = JobQuery(
        group=status if status in GROUPS else "all",
        statuses=None if status in GROUPS else frozenset({status}),
        search=search,
        sort=sort,
        descending=not asc,
        limit=limit,
    )
    ledger = open_ledger(settings)
    _catch_up_active(ledger, settings)
    page = list_jobs(ledger, query)
    if as_json:
        emit_json({"total": page.total, "jobs": [job_summary(j) for j in page.jobs]})
        return
    if not page.jobs:
        click.echo("no jobs yet" if page.total == 0 and status == "all" and not search else "no matching jobs")
        return
    print_table(
        ["job", "name", "status", "model", "progress", "duration", "cost", "created"],
        [
            (
                short_id(j.id),
                j.name or "—",
                j.status,
                j.base_model.rsplit("/", 1)[-1],
                _progress(j),
                _duration(j),
                money(j.actual_cost_usd),
                j.created_at.strftime("%m-%d %H:%M"),
            )
            for j in page.jobs
        ],
        flexible=("name", "model"),
        justify={"cost": "right", "duration": "right"},
    )
    if page.total > len(page.jobs):
        click.echo(f"showing {len(page.jobs)} of {page.total} (use --limit)")

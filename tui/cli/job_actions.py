"""``lorapod cancel``, ``resume`` and ``retry``: change what a job is doing."""

from __future__ import annotations

import sys

import click

from engine.config import FieldChange
from store.jobs import short_id
from store.status import TERMINAL
from tui.cli.common import JOB_ARGUMENT, confirm, open_context
from tui.cli.output import money, print_table
from tui.cli.run import follow_live, summarize
from tui.cli.supervisor import ensure_supervisor

YES = click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")


@click.command()
@JOB_ARGUMENT
@YES
@click.option("--no-wait", is_flag=True, help="Return once the request is sent, without waiting for the job to stop.")
def cancel(job_id: str, assume_yes: bool, no_wait: bool) -> None:
    """Cancel a job: it finishes its step, saves a checkpoint and stops."""
    context = open_context()
    supervisor = context.supervisor()
    job = context.job(job_id)
    supervisor.catch_up([job.id])
    job = context.job(job_id)
    if job.status in TERMINAL:
        raise click.ClickException(f"job {short_id(job.id)} is already {job.status}")
    if not confirm(
        f"Cancel job {short_id(job.id)} ({job.status}, {money(job.actual_cost_usd)} spent so far)?", assume_yes
    ):
        click.echo("not cancelled")
        return
    supervisor.cancel(job.id)
    click.echo(f"cancel requested for job {short_id(job.id)}")
    if no_wait:
        return
    final = supervisor.follow(job.id)
    sys.exit(0 if final.status == "cancelled" else summarize(final))


@click.command()
@JOB_ARGUMENT
@click.option("--detach", is_flag=True, help="Restart it and return.")
@click.option("--force", is_flag=True, help="Resume even when the budget would refuse it.")
def resume(job_id: str, detach: bool, force: bool) -> None:
    """Restart an interrupted job from its newest checkpoint (same workdir, same spec), budget permitting."""
    context = open_context()
    supervisor = context.supervisor()
    job = context.job(job_id)
    supervisor.catch_up([job.id])
    attempt = supervisor.resume(job.id, force=force)
    click.echo(f"job {short_id(job.id)} resumed (attempt {attempt.number}) from its newest checkpoint")
    ensure_supervisor()
    if detach:
        return
    sys.exit(summarize(follow_live(context, supervisor, context.job(str(job.id)))))


def _show_diff(changes: list[FieldChange]) -> None:
    if not changes:
        click.echo("same configuration as before")
        return
    print_table(["field", "before", "retry"], [(c.field, c.before, c.after) for c in changes], title="Changes")


@click.command()
@JOB_ARGUMENT
@click.option("--suggested", is_flag=True, help="Use the values the failure suggested (e.g. after out of memory).")
@YES
@click.option("--detach", is_flag=True, help="Start it and return.")
@click.option("--force", is_flag=True, help="Start even when the budget would refuse it.")
def retry(job_id: str, suggested: bool, assume_yes: bool, detach: bool, force: bool) -> None:
    """Run a finished job again as a new job linked to it, with the same or the suggested configuration."""
    context = open_context()
    supervisor = context.supervisor()
    job = context.job(job_id)
    _, changes = supervisor.retry_spec(job.id, suggested=suggested)
    _show_diff(changes)
    if not confirm(f"Start a retry of job {short_id(job.id)}?", assume_yes):
        click.echo("not started")
        return
    submission = supervisor.retry(job.id, suggested=suggested, force=force)
    new = submission.job
    click.echo(f"job {short_id(new.id)} started, retry {new.retry_count} of job {short_id(job.id)}")
    ensure_supervisor()
    if detach:
        return
    sys.exit(summarize(follow_live(context, supervisor, new)))

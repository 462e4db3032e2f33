"""``lorapod cancel``, ``resume`` and ``retry``: change what a job is doing."""

from __future__ import annotations

import sys

import click

from engine.config import FieldChange
from store.jobs import short_id
from store.status import TERMINAL
from tui.cli.common import JOB_ARGUMENT, confirm, open_context
from tui.cli.output import money, print_table
from tui.cli.results import JSON_OPTION, emit_result, say_for
from tui.cli.run import follow_live, summarize
from tui.cli.supervisor import ensure_supervisor

YES = click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")


@click.command()
@JOB_ARGUMENT
@YES
@click.option("--no-wait", is_flag=True, help="Return once the request is sent, without waiting for the job to stop.")
@JSON_OPTION
def cancel(job_id: str, assume_yes: bool, no_wait: bool, as_json: bool) -> None:
    """Cancel a job: it finishes its step, saves a checkpoint and stops."""
    say = say_for(as_json)
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
    after = supervisor.cancel(job.id)
    ended_at_once = after.status == "cancelled"  # no live engine: nothing to checkpoint
    say(f"job {short_id(job.id)} cancelled: it had no live engine" if ended_at_once
        else f"cancel requested for job {short_id(job.id)}")  # fmt: skip
    if not (no_wait or ended_at_once):
        supervisor.follow(job.id)
    final = context.job(str(job.id))
    if as_json:
        emit_result(context, final, "cancel", waited=not no_wait, had_live_engine=not ended_at_once)
        sys.exit(0 if final.status == "cancelled" or no_wait else 1)
    if no_wait:
        return
    sys.exit(0 if final.status == "cancelled" else summarize(final))


@click.command()
@JOB_ARGUMENT
@click.option("--detach", is_flag=True, help="Restart it and return.")
@click.option("--force", is_flag=True, help="Resume even when the budget would refuse it.")
@JSON_OPTION
def resume(job_id: str, detach: bool, force: bool, as_json: bool) -> None:
    """Restart an interrupted job from its newest checkpoint (same workdir, same spec), budget permitting."""
    context = open_context()
    supervisor = context.supervisor()
    job = context.job(job_id)
    supervisor.catch_up([job.id])
    attempt = supervisor.resume(job.id, force=force)
    say_for(as_json)(f"job {short_id(job.id)} resumed (attempt {attempt.number}) from its newest checkpoint")
    ensure_supervisor()
    if as_json:
        if not detach:
            supervisor.follow(job.id)
        code = emit_result(context, job, "resume", attempt=attempt.number, detached=detach)
        sys.exit(0 if detach else code)
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
@JSON_OPTION
def retry(job_id: str, suggested: bool, assume_yes: bool, detach: bool, force: bool, as_json: bool) -> None:
    """Run a finished job again as a new job linked to it, with the same or the suggested configuration."""
    context = open_context()
    supervisor = context.supervisor()
    job = context.job(job_id)
    _, changes = supervisor.retry_spec(job.id, suggested=suggested)
    if not as_json:
        _show_diff(changes)
    if not confirm(f"Start a retry of job {short_id(job.id)}?", assume_yes):
        click.echo("not started")
        return
    submission = supervisor.retry(job.id, suggested=suggested, force=force)
    new = submission.job
    say_for(as_json)(f"job {short_id(new.id)} started, retry {new.retry_count} of job {short_id(job.id)}")
    ensure_supervisor()
    if as_json:
        if not detach:
            supervisor.follow(new.id)
        diff = [{"field": c.field, "before": c.before, "retry": c.after} for c in changes]
        code = emit_result(context, new, "retry", retry_of=str(job.id), changes=diff, detached=detach)
        sys.exit(0 if detach else code)
    if detach:
        return
    sys.exit(summarize(follow_live(context, supervisor, new)))

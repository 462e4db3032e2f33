"""``lorapod run`` and ``lorapod watch``: start a job and follow it live, or follow one already running."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.config import Provider as ProviderName
from store.jobs import short_id
from store.models import TrainingJob
from store.status import TERMINAL
from tui.cli.common import JOB_ARGUMENT, Context, job_title, open_context
from tui.cli.output import money, warn
from tui.cli.plan import plan_data, print_plan
from tui.cli.presets import SET_HELP, resolve_preset
from tui.cli.progress import JobView, print_plain
from tui.cli.results import JSON_OPTION, emit_result, say_for
from tui.cli.supervisor import ensure_supervisor

if TYPE_CHECKING:
    from remote.supervisor import Supervisor, Update


def follow_live(context: Context, supervisor: Supervisor, job: TrainingJob) -> TrainingJob:
    """Follow a job until it ends, redrawing on a terminal or printing lines when piped; Ctrl-C asks."""
    view = JobView(job)
    while True:
        try:
            if sys.stdout.isatty():
                job = _follow_rich(supervisor, job, view)
            else:
                click.echo(job_title(job))
                job = supervisor.follow(job.id, on_update=lambda u: _plain(view, u))
            return job
        except KeyboardInterrupt:
            choice = _ask_after_interrupt(job)
            if choice == "cancel":
                supervisor.cancel(job.id, "cancelled by the user (Ctrl-C)")
                click.echo("cancelling: the engine finishes its step, saves a checkpoint and stops…")
            elif choice == "detach":
                click.echo(f"detached; the job keeps running. Follow it again with: lorapod watch {short_id(job.id)}")
                return context.job(str(job.id))


def _plain(view: JobView, update: Update) -> None:
    view.update(update)
    print_plain(view)


def _follow_rich(supervisor: Supervisor, job: TrainingJob, view: JobView) -> TrainingJob:
    from rich.live import Live

    from tui.cli.output import console

    with Live(view.render(), console=console(), refresh_per_second=4, transient=False) as live:

        def update(u: Update) -> None:
            view.update(u)
            view.take_lines()
            live.update(view.render())

        return supervisor.follow(job.id, on_update=update)


def _ask_after_interrupt(job: TrainingJob) -> str:
    if not sys.stdin.isatty():
        return "detach"
    click.echo()
    answer = click.prompt(
        f"job {short_id(job.id)} is still running — [c]ancel it, [d]etach (it keeps running), or keep [w]atching?",
        type=click.Choice(["c", "d", "w"]),
        default="w",
    )
    return {"c": "cancel", "d": "detach"}.get(answer, "watch")


def summarize(job: TrainingJob) -> int:
    """The closing lines of a followed job, and the exit code: 0 only when it completed."""
    from tui.status import label

    click.echo(f"{label(job.status)} · {job_title(job)} · cost {money(job.actual_cost_usd)}")
    if job.status == "failed":
        click.secho(f"error ({job.error_category}): {job.error_message}", fg="red", err=True)
        if job.error_hint:
            click.echo(f"hint: {job.error_hint}", err=True)
        click.echo(
            f"retry with: lorapod retry {short_id(job.id)}"
            + (" --suggested" if job.error_category == "out_of_memory" else "")
        )
    elif job.status == "interrupted":
        click.echo(f"{job.error_message}\nresume with: lorapod resume {short_id(job.id)}")
    elif job.status == "completed":
        click.echo(f"packages: lorapod download {short_id(job.id)} --package deploy -o DIR")
    return 0 if job.status == "completed" else 1


@click.command()
@click.option(
    "--dataset",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The dataset file (brightrun-lora-v4 JSON or JSONL, or chat JSONL).",
)
@click.option("--preset", "preset_name", default=None, help="Preset (default: settings' default_preset).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--provider", type=click.Choice([p.value for p in ProviderName]), default=None, help="Where it runs.")
@click.option("--name", default=None, help="A name for the job.")
@click.option("--detach", is_flag=True, help="Start it and return; follow later with `lorapod watch JOB`.")
@click.option("--force", is_flag=True, help="Start even when the budget would refuse it.")
@click.option("--plan", "plan_only", is_flag=True, help="Show everything the run would do, creating nothing.")
@JSON_OPTION
def run(
    dataset: Path,
    preset_name: str | None,
    overrides: tuple[str, ...],
    provider: str | None,
    name: str | None,
    detach: bool,
    force: bool,
    plan_only: bool,
    as_json: bool,
) -> None:
    """Start a training job and follow it live (Ctrl-C: cancel or detach).

    With --json, nothing is drawn: it prints one document once the job ends (or at once with --detach)."""
    from remote.supervisor import BudgetRefused

    say = say_for(as_json)
    context = open_context()
    settings = context.settings
    extra = [f"provider={provider or settings.default_provider.value}"]
    preset = resolve_preset(preset_name or settings.default_preset, (*overrides, *extra))
    spec = preset.to_spec(str(dataset), ())
    if name is not None:  # --name wins over --set name=…; neither given keeps the spec's (None)
        spec = spec.model_copy(update={"name": name})
    supervisor = context.supervisor()
    if plan_only:
        data = plan_data(supervisor.plan(spec))
        print_plan(data, as_json=as_json)
        sys.exit(1 if data["problems"] else 0)
    try:
        submission = supervisor.submit(spec, force=force)
    except BudgetRefused as refused:
        for reason in refused.decision.reasons:
            click.secho(f"refused by the budget: {reason}", fg="red", err=True)
        click.echo("pass --force to start it anyway, or change the budget settings (lorapod config set …)", err=True)
        sys.exit(1)
    job = submission.job
    validation = submission.validation
    about = "≈" if validation.get("tokens_estimated") else ""
    pairs, examples, tokens = (
        validation.get("trainable_pairs"),
        validation.get("examples"),
        validation.get("tokens") or 0,
    )
    say(
        f"job {short_id(job.id)} queued: {preset.name} on {dataset.name} "
        f"({pairs} trainable pairs, {about}{examples} examples, {about}{tokens:,} tokens)"
    )
    if about:
        say("  (token counts estimated from characters until the model's tokenizer is on this machine)")
    for warning in validation.get("warnings", [])[:5]:
        warn(f"{warning['code']} ×{warning['count']}: {warning['message']}")
    if submission.estimate is not None:
        low, high = submission.estimate.cost
        say(f"estimate: {money(low)}–{money(high)} on {submission.estimate.gpu_label}")
        say(f"  resting on {submission.estimate.throughput_source}")
    for alert in submission.decision.alerts:
        warn(alert)
    attempt = supervisor.launch(job.id)
    say(f"launched on {job.provider}: {attempt.handle.get('workdir')}")
    ensure_supervisor()  # the job keeps its limits, recovery and notices once this command exits
    estimate = submission.estimate
    document: dict[str, Any] = {
        "validation": validation,
        "estimate": None if estimate is None else {"cost_usd": list(estimate.cost), "gpu": estimate.gpu_label},
        "budget_alerts": submission.decision.alerts,
    }
    if detach:
        if as_json:
            emit_result(context, job, "run", detached=True, **document)
            return
        click.echo(f"detached; follow it with: lorapod watch {short_id(job.id)}")
        return
    if as_json:
        supervisor.follow(job.id)
        sys.exit(emit_result(context, job, "run", detached=False, **document))
    final = follow_live(context, supervisor, context.job(str(job.id)))
    sys.exit(summarize(final))


@click.command()
@JOB_ARGUMENT
@JSON_OPTION
def watch(job_id: str, as_json: bool) -> None:
    """Follow a job live from where the ledger left off (catches up on what happened meanwhile).

    With --json, nothing is drawn: it prints one document once the job ends."""
    context = open_context()
    job = context.job(job_id)
    supervisor = context.supervisor()
    if job.status in TERMINAL:
        supervisor.catch_up([job.id])
        if as_json:
            sys.exit(emit_result(context, job, "watch"))
        sys.exit(summarize(context.job(str(job.id))))
    if as_json:
        supervisor.follow(job.id)
        sys.exit(emit_result(context, job, "watch"))
    final = follow_live(context, supervisor, job)
    sys.exit(summarize(final))

"""``lorapod chat``: put prompts to a job's base model and its adapter, the two replies side by side as they come.

A local job's model runs in a subprocess on this machine; a RunPod job's on a pod started for it, its rate
shown (and agreed to) first, billed to the job, and deleted by the background supervisor after
``playground_idle_minutes`` without a prompt (``--stop`` deletes it at once). docs/playground.md.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from store.jobs import short_id
from tui.cli.common import JOB_ARGUMENT, Context, confirm, open_context
from tui.cli.output import console, emit_json, money
from tui.cli.results import JSON_OPTION, say_for

if TYPE_CHECKING:
    from remote.playground import Reply, Session, Side
    from store.models import TrainingJob


@click.command()
@JOB_ARGUMENT
@click.option("--prompt", "-p", help="Ask this once and exit (without it: an interactive prompt).")
@click.option("--system", "-s", default=None, help="A system prompt put before each user prompt.")
@click.option("--max-new-tokens", type=click.IntRange(1, 2048), default=128, show_default=True)
@click.option("--stop", is_flag=True, help="Delete the job's playground pod now (RunPod jobs).")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Agree to a playground pod's rate without asking.")
@JSON_OPTION
def chat(
    job_id: str, prompt: str | None, system: str | None, max_new_tokens: int, stop: bool, assume_yes: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Try a job's adapter: each prompt goes to the base model and to the adapter, replies side by side."""
    context = open_context()
    job = context.job(job_id)
    if stop:
        _stop(context, job, as_json)
        return
    if prompt is None and as_json:
        raise click.UsageError("--json answers one prompt: give it with --prompt")
    if prompt is not None and not prompt.strip():
        raise click.UsageError("--prompt is empty: give the text to ask")
    say = say_for(as_json)
    say(f"starting the playground for job {short_id(job.id)} ({job.base_model})…")
    session = _open(context, job, assume_yes, say)
    if session is None:
        click.echo("no pod started")
        return
    history = [{"role": "system", "content": system}] if system else []
    try:
        if prompt is not None:
            replies = _ask(session, prompt, history, max_new_tokens, show=not as_json)
            if as_json:
                emit_json(_document(job, prompt, replies, session))
            return
        _interactive(session, history, max_new_tokens)
    finally:
        session.close()
        if job.provider == "runpod" and not as_json:
            minutes = context.settings.playground_idle_minutes
            click.echo(f"the playground pod stays up for the next prompt; it is deleted after {minutes:g} min "
                       f"without use (now: lorapod chat {short_id(job.id)} --stop)")  # fmt: skip


def _open(context: Context, job: TrainingJob, assume_yes: bool, say: Any) -> Session | None:
    from remote.playground import open_session, quote_session

    quote = quote_session(context.settings, context.ledger, job)
    if quote is not None:
        say(f"the playground needs {quote.describe()}")
        if quote.reuse is None and not confirm(
            f"Start a playground pod at ${quote.rate_usd_per_hour:.2f}/h?", assume_yes
        ):
            return None
    return open_session(context.settings, context.ledger, job, quote)


def _ask(
    session: Session, prompt: str, history: list[dict[str, str]], max_new_tokens: int, *, show: bool
) -> dict[Side, Reply]:
    from remote.playground import ask_both

    if not show:
        return ask_both(session, prompt, max_new_tokens=max_new_tokens, history=history)
    out = console()
    if not out.is_terminal:  # piped: each reply under its name, streamed line by line

        def piece(side: Side, text: str) -> None:
            if side not in started:
                started.add(side)
                click.echo(f"\n── {side} ──")
            click.echo(text, nl=False)

        started: set[str] = set()
        replies = ask_both(session, prompt, max_new_tokens=max_new_tokens, history=history, on_piece=piece)
        click.echo()
        return replies
    from rich.live import Live

    texts: dict[str, str] = {"base": "", "adapter": ""}

    def view() -> Any:
        from rich.table import Table

        table = Table(expand=True, show_lines=False)
        table.add_column("base model", ratio=1)
        table.add_column("adapter", ratio=1)
        table.add_row(texts["base"] or "…", texts["adapter"] or "…")
        return table

    with Live(view(), console=out, refresh_per_second=12) as live:

        def streamed(side: Side, text: str) -> None:
            texts[side] += text
            live.update(view())

        return ask_both(session, prompt, max_new_tokens=max_new_tokens, history=history, on_piece=streamed)


def _interactive(session: Session, history: list[dict[str, str]], max_new_tokens: int) -> None:
    if not sys.stdin.isatty():
        raise click.UsageError("no terminal to ask on: give the prompt with --prompt")
    click.echo("each prompt goes to the base model and to the adapter; an empty line or Ctrl-D ends")
    while True:
        try:
            text = click.prompt("you", default="", show_default=False, prompt_suffix=" › ")
        except (EOFError, click.Abort):
            click.echo()
            return
        if not text.strip():
            return
        _ask(session, text, history, max_new_tokens, show=True)


def _document(job: TrainingJob, prompt: str, replies: dict[Side, Reply], session: Session) -> dict[str, Any]:
    where: dict[str, Any] = {"provider": job.provider}
    attempt = getattr(session, "attempt", None)
    if attempt is not None:
        where.update(pod_id=attempt.handle.get("pod_id"), rate_usd_per_hour=attempt.rate_usd_per_hour)
    return {
        "action": "chat", "job_id": str(job.id), "short_id": short_id(job.id), "base_model": job.base_model,
        "prompt": prompt, "base": replies["base"].as_dict(), "adapter": replies["adapter"].as_dict(),
        "playground": where,
    }  # fmt: skip


def _stop(context: Context, job: TrainingJob, as_json: bool) -> None:
    from remote.runpod.playground import RunPodPlaygrounds, open_playgrounds

    found = open_playgrounds(context.ledger, job.id)
    stopped = []
    if found:
        playgrounds = RunPodPlaygrounds(context.settings, context.ledger)
        stopped = [(a.handle.get("pod_id"), playgrounds.stop(a)) for a in found]
    if as_json:
        emit_json({"action": "chat-stop", "job_id": str(job.id), "deleted": [
            {"pod_id": pod, "cost_usd": cost} for pod, cost in stopped]})  # fmt: skip
        return
    if not stopped:
        click.echo(f"job {short_id(job.id)} has no playground pod up")
    for pod, cost in stopped:
        click.echo(f"playground pod {pod} deleted; it cost {money(cost)}")

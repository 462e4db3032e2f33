"""The ``lorapod`` command: sub-commands load on first use so ``lorapod --help`` answers at once.

Exit codes: 0 ok, 1 failure (the message says what and where), 2 usage error (bad option or value).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name → (module, attribute, one-line help). The help lives here so listing commands imports none of them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("tui.cli.run", "run", "Start a training job and follow it live."),
    "watch": ("tui.cli.run", "watch", "Follow a job live, catching up on what happened meanwhile."),
    "show": ("tui.cli.job_info", "show", "Everything about one job."),
    "logs": ("tui.cli.job_info", "logs", "The engine's log of a job (-f to follow)."),
    "cancel": ("tui.cli.job_actions", "cancel", "Cancel a job (it checkpoints first)."),
    "resume": ("tui.cli.job_actions", "resume", "Restart an interrupted job from its newest checkpoint."),
    "retry": ("tui.cli.job_actions", "retry", "Run a finished job again, as it was or as its failure suggests."),
    "chat": ("tui.cli.chat", "chat", "Put prompts to a job's base model and adapter, replies side by side."),
    "download": ("tui.cli.job_info", "download", "Copy a job's package into a folder, checksums verified."),
    "export": ("tui.cli.job_info", "export_metrics", "A job's metrics history as CSV or JSON."),
    "export-model": (
        "tui.cli.export_model",
        "export_model",
        "A job's adapter or merged model, with a model card; or to the Hub.",
    ),
    "compare": ("tui.cli.job_info", "compare", "Jobs side by side: losses, perplexities, cost, config."),
    "rate": ("tui.cli.evaluate", "rate", "Rate a job's replies blind, base against adapter."),
    "judge": ("tui.cli.evaluate", "judge", "Judge a job's replies through an OpenAI-compatible endpoint."),
    "report": ("tui.cli.report", "report", "A client report of one job, or several compared, as one HTML page."),
    "config": ("tui.cli.config", "config", "Show or change settings (secrets are never printed)."),
    "presets": ("tui.cli.presets", "presets", "List, show and compare job presets."),
    "estimate": ("tui.cli.costs", "estimate", "Estimate a job's duration and cost range."),
    "costs": ("tui.cli.costs", "costs", "Spending against the budget; what estimates rest on; calibrate them."),
    "jobs": ("tui.cli.jobs", "jobs", "List jobs in the ledger."),
    "pods": ("tui.cli.pods", "pods", "lorapod's RunPod pods; flag and delete those no live job owns."),
    "dataset": ("tui.cli.dataset", "dataset", "Validate, convert, measure and preview training datasets."),
    "spec": ("tui.cli.spec", "spec", "Print a job spec for `python -m engine run`."),
    "supervisor": ("tui.cli.supervisor", "supervisor", "The background supervisor: start, stop, status, logs."),
    "sync": ("tui.cli.sync", "sync", "Sync the ledger with the Supabase project's Postgres (push, then pull)."),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported only when one is run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attribute, _ = entry
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, _, help_text) in COMMANDS.items()])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except Exception as exc:
            failure = as_failure(exc)
            if failure is None:
                raise
            raise failure from None


def as_failure(exc: BaseException) -> click.ClickException | None:
    """lorapod's own errors as a clean message and exit code 1; None for anything unexpected."""
    from engine import LorapodError

    if isinstance(exc, LorapodError):
        return click.ClickException(str(exc))
    return None


@click.group(cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lorapod", prog_name="lorapod")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """lorapod: fine-tune LLMs with LoRA/QLoRA on rented GPUs, from a terminal.

    With no command on a terminal, opens the dashboard.

    Settings come from the environment and config.toml (see `lorapod config show`); LORAPOD_HOME, when set,
    holds the whole installation.
    """
    if ctx.invoked_subcommand is None:
        if sys.stdin.isatty() and sys.stdout.isatty():
            from tui.app import run

            run()
        else:
            click.echo(ctx.get_help())


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="lorapod")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)

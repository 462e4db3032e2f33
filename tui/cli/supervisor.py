"""``lorapod supervisor``: the background process that keeps every live job's limits, recovery and notices."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from tui.cli.output import emit_json

if TYPE_CHECKING:
    from store.settings import Paths

JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _paths() -> Paths:
    from store.settings import load_settings

    return load_settings().paths


def ensure_supervisor() -> None:
    """Start the background supervisor unless it runs; a command that launches a job calls this, so the job
    is followed after the command exits. A supervisor that does not come up is reported, not fatal."""
    from remote.daemon import DaemonFiles, ensure_running

    paths = _paths()
    if ensure_running(paths) is None:
        click.secho(
            f"warning: the background supervisor did not start (see {DaemonFiles.of(paths).log}); "
            "this job is followed only while a lorapod command or the dashboard is open",
            fg="yellow",
            err=True,
        )


@click.group()
def supervisor() -> None:
    """The background supervisor: follows every live job, whoever started it, with nothing else open."""


@supervisor.command()
@JSON
def start(as_json: bool) -> None:
    """Start it (nothing happens when it already runs)."""
    from remote.daemon import ensure_running, status

    pid = ensure_running(_paths())
    if pid is None:
        raise click.ClickException(f"the supervisor did not start; see {status(_paths()).log}")
    if as_json:
        emit_json(status(_paths()).as_dict())
    else:
        click.echo(f"supervisor running (pid {pid})")


@supervisor.command()
@JSON
def stop(as_json: bool) -> None:
    """Stop it; running jobs go on, and the next run, resume or dashboard starts it again."""
    from remote.daemon import status
    from remote.daemon import stop as stop_daemon

    was = status(_paths())
    stopped = stop_daemon(_paths())
    if as_json:
        emit_json({"was_running": was.running, "stopped": stopped})
    elif not was.running:
        click.echo("the supervisor is not running")
    elif stopped:
        click.echo(f"supervisor stopped (pid {was.pid})")
    if not stopped:
        raise click.ClickException(f"the supervisor (pid {was.pid}) did not stop within 30 s")


@supervisor.command()
@JSON
def status(as_json: bool) -> None:
    """Whether it runs, since when, and which jobs it follows."""
    from remote.daemon import status as daemon_status

    state = daemon_status(_paths())
    if as_json:
        emit_json(state.as_dict())
        return
    if not state.running:
        click.echo(f"not running (log: {state.log})")
        return
    following = ", ".join(job[:8] for job in state.following) or "no live job"
    click.echo(f"running (pid {state.pid}) since {state.started_at}; following {following}")
    click.echo(f"log: {state.log}")


@supervisor.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing as it logs.")
@click.option("-n", "--lines", default=50, show_default=True, help="How many of the last lines to show.")
def logs(follow: bool, lines: int) -> None:
    """Its log."""
    from remote.daemon import DaemonFiles

    path = DaemonFiles.of(_paths()).log
    if not path.exists():
        click.echo("the supervisor has not logged anything yet")
        return
    with path.open("r", encoding="utf-8", errors="replace") as log:
        for line in log.readlines()[-lines:] if lines > 0 else []:
            click.echo(line, nl=False)
        while follow:
            line = log.readline()
            if line:
                click.echo(line, nl=False)
            else:
                sys.stdout.flush()
                time.sleep(0.25)


@supervisor.command(name="run")
def run_foreground() -> None:
    """Run it in the foreground (for a service manager; logs to stderr and the log file)."""
    from remote.daemon import main

    code = main([])
    if code == 3:
        raise click.ClickException("a supervisor already runs for this data dir (`lorapod supervisor status`)")
    sys.exit(code)

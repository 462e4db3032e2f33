"""What an action command prints with ``--json``: one result document on stdout, for scripts.

Every document names the action and holds the job as ``lorapod show --json`` prints it, plus what the action
adds (the attempt resumed, the job retried, the package's path). Errors are not documents: they exit 1 with
the message on stderr, as without ``--json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from store.models import TrainingJob
from tui.cli.common import Context
from tui.cli.output import emit_json

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON result document (for scripts).")


def say_for(as_json: bool) -> Callable[[str], None]:
    """``click.echo`` for people; nothing under ``--json``, whose stdout is the document alone."""
    return (lambda _message: None) if as_json else click.echo


def result(context: Context, job: TrainingJob, action: str, **extra: Any) -> dict[str, Any]:
    from tui.cli.job_info import job_details

    return {"action": action, **extra, "job": job_details(context, context.job(str(job.id)))}


def emit_result(context: Context, job: TrainingJob, action: str, **extra: Any) -> int:
    """Print the document; the exit code a followed job ends with (0 only when it completed)."""
    document = result(context, job, action, **extra)
    emit_json(document)
    return 0 if document["job"]["status"] == "completed" else 1

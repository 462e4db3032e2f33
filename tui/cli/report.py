"""``lorapod report``: a self-contained HTML report of one job, or of several compared, for a client."""

from __future__ import annotations

from pathlib import Path

import click

from store.jobs import short_id
from store.report import build_report, report_name
from tui.cli.common import open_context
from tui.cli.output import emit_json


@click.command()
@click.argument("job_ids", metavar="JOB [JOB…]", nargs=-1, required=True)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
    help="HTML file to write (default: report-<job ids>.html here).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result document (for scripts).")
def report(job_ids: tuple[str, ...], output: Path | None, as_json: bool) -> None:
    """Write a client report: data and checksums, settings, GPU, time and cost, curves, perplexity, quality
    against targets, replies side by side and package checksums. Several jobs make a comparison. The page
    loads nothing from the network and prints to PDF."""
    context = open_context()
    jobs = [context.job(job_id) for job_id in job_ids]
    target = output or Path(report_name([short_id(job.id) for job in jobs]))
    path = build_report(context.ledger, [str(job.id) for job in jobs], target)
    if as_json:
        emit_json({"action": "report", "jobs": [str(job.id) for job in jobs], "path": str(path.absolute()),
                   "size_bytes": path.stat().st_size})  # fmt: skip
        return
    click.echo(f"{path} ({path.stat().st_size / 1e3:.0f} KB): open it in a browser, or print it to PDF")

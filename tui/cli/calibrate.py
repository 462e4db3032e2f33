"""``lorapod costs calibrate``: a GPU's throughput measured by ``python -m engine bench`` feeds the estimates."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from presets.gpus import catalogue
from store.costs import calibration, estimate
from store.settings import load_settings
from store.throughput import (
    clear_measurements,
    figure,
    measurement_from_report,
    parse_report,
    read_report,
    record_measurement,
)
from tui.cli.common import open_ledger
from tui.cli.output import emit_json


@click.command()
@click.argument("report", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), required=False)
@click.option("--gpu", default=None, help="Catalogue GPU the report stands for (default: the GPU it ran on).")
@click.option("--force", is_flag=True, help="Record a CPU, toy or other-GPU report anyway: estimates will be wrong.")
@click.option("--clear", is_flag=True, help="Forget the recorded measurements (with --gpu, that GPU's only).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def calibrate(report: Path | None, gpu: str | None, force: bool, clear: bool, as_json: bool) -> None:
    """Record a GPU's measured throughput from a `python -m engine bench --json` report (a file, or - for stdin).

    From then on estimates for that GPU rest on the measurement (other GPUs and model sizes scale from it),
    unless completed jobs have measured their own throughput: those come first.
    """
    settings = load_settings()
    data_dir = settings.paths.data_dir
    if clear:
        if report is not None:
            raise click.UsageError("--clear takes no REPORT")
        removed = clear_measurements(data_dir, gpu)
        if as_json:
            emit_json({"removed": [m.as_dict() for m in removed]})
        else:
            click.echo(f"removed {len(removed)} bench measurement{'s' * (len(removed) != 1)}")
        return
    if report is None:
        raise click.UsageError("give a REPORT file (the output of `python -m engine bench --json`), or --clear")
    if str(report) == "-":
        document = parse_report(sys.stdin.read(), "standard input")
        file_date, source = datetime.now(UTC), "standard input"
    else:
        if not report.exists():
            raise click.BadParameter(f"{report}: no such file", param_hint="REPORT")
        document = read_report(report)
        file_date, source = datetime.fromtimestamp(report.stat().st_mtime, UTC), str(report)
    measurement, warnings = measurement_from_report(
        document, gpu_id=gpu, force=force, source=source, file_date=file_date
    )
    record_measurement(data_dir, measurement)
    jobs = calibration(open_ledger(settings))
    # What a reference-size job on this GPU now rests on (the jobs' figures where they exist).
    now = estimate(0, catalogue().throughput.reference_model_b, measurement.gpu_id, settings=settings, calibration=jobs)
    for warning in warnings:
        loud = warning.startswith("FORCED")
        click.secho(f"{'WARNING' if loud else 'warning'}: {warning}", fg="red" if loud else "yellow", err=True)
    if as_json:
        emit_json(
            {
                "recorded": measurement.as_dict(),
                "warnings": warnings,
                "jobs_take_precedence": jobs is not None,
                "reference_estimate": {
                    "gpu_id": now.gpu_id,
                    "model_b": catalogue().throughput.reference_model_b,
                    "tokens_per_second": now.tokens_per_second,
                    "rests_on": now.throughput_basis,
                },
            }
        )
        return
    click.echo(f"recorded for {now.gpu_label}: {measurement.label}")
    low, high = now.tokens_per_second
    click.echo(
        f"a {catalogue().throughput.reference_model_b:g}B QLoRA estimate on one {now.gpu_label} now runs at "
        f"{figure(low)}–{figure(high)} tokens/s, resting on {now.throughput_basis['kind']}"
    )
    if jobs is not None:
        click.echo(f"note: completed jobs' throughput ({jobs.label}) comes first; estimates rest on it while it exists")

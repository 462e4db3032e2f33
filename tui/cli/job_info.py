"""``lorapod show``, ``logs``, ``export``, ``compare`` and ``download``: what a job did and what it made."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from engine.config import diff
from engine.targets import check_targets, target_rows
from remote.provider import RunHandle
from store.artifacts import list_artifacts
from store.attempts import list_attempts
from store.events import list_events
from store.jobs import job_spec, short_id
from store.judgements import with_local_results
from store.metrics import METRIC_FIELDS, metrics_history
from store.models import TrainingJob
from store.status import TERMINAL
from tui.cli.common import JOB_ARGUMENT, Context, duration, job_title, open_context
from tui.cli.output import emit_json, money, print_table
from tui.status import label


def _last_payload(context: Context, job: TrainingJob, kind: str) -> dict[str, Any] | None:
    events = list_events(context.ledger, job.id, types=[kind])
    return events[-1].payload if events else None


EVALUATION_KEYS = (
    "base_perplexity", "adapter_perplexity", "eval_loss", "groups", "best_checkpoint", "judge", "human", "retention",
)  # fmt: skip


def job_details(context: Context, job: TrainingJob) -> dict[str, Any]:
    """Everything `show --json` prints about a job, with what this machine measured after it ended (the judge run
    from here, the ledger's human ratings) and the targets checked over all of it."""
    history = metrics_history(context.ledger, job.id)
    losses = [m.loss for m in history if m.loss is not None]
    eval_losses = [m.eval_loss for m in history if m.eval_loss is not None]
    evaluation = with_local_results(context.ledger, job.id, _last_payload(context, job, "eval") or {})
    error = _last_payload(context, job, "error")
    return {
        "id": str(job.id),
        "short_id": short_id(job.id),
        "name": job.name,
        "status": job.status,
        "stage": job.stage,
        "provider": job.provider,
        "preset": job.preset,
        "base_model": job.base_model,
        "dataset": job.spec.get("dataset", {}),
        "hyperparameters": job.hyperparameters,
        "resources": job.resources,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
        "duration": duration(job.started_at, job.completed_at),
        "progress": {"step": job.current_step, "total_steps": job.total_steps, "epoch": job.current_epoch},
        "cost": {
            "actual_usd": job.actual_cost_usd,
            "estimated_usd": job.estimated_cost_usd,
            "gpu_hours": job.gpu_hours,
        },
        "loss": {
            "final": losses[-1] if losses else None,
            "best": min(losses) if losses else None,
            "best_eval": min(eval_losses) if eval_losses else None,
        },
        "evaluation": {k: evaluation.get(k) for k in EVALUATION_KEYS},
        # Checked here (with_local_results), not taken from the pod: ratings and a local judge come in later.
        "targets": evaluation.get("targets") or check_targets(evaluation),
        "error": error,
        "attempts": [
            {
                "number": a.number,
                "started_at": a.started_at.isoformat(),
                "ended_at": a.ended_at.isoformat() if a.ended_at else None,
                "cost_usd": a.cost_usd,
                "outcome": a.outcome,
                "workdir": a.handle.get("workdir"),
            }
            for a in list_attempts(context.ledger, job.id)
        ],
        "artifacts": [
            {"kind": a.artifact_type, "path": a.storage_path, "size_bytes": a.size_bytes, "sha256": a.sha256}
            for a in list_artifacts(context.ledger, job.id)
        ],
        "parent_job_id": str(job.parent_job_id) if job.parent_job_id else None,
        "retry_count": job.retry_count,
        "workdir": job.workdir,
    }


def _refreshed(context: Context, job_id: str) -> TrainingJob:
    job = context.job(job_id)
    if job.status not in TERMINAL:
        context.supervisor().catch_up([job.id])
        job = context.job(job_id)
    return job


@click.command()
@JOB_ARGUMENT
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(job_id: str, as_json: bool) -> None:
    """Everything about one job: status, progress, cost, losses, evaluation, attempts, packages, errors."""
    context = open_context()
    details = job_details(context, _refreshed(context, job_id))
    if as_json:
        emit_json(details)
        return
    job = context.job(job_id)
    click.echo(job_title(job))
    progress = details["progress"]
    rows: list[tuple[str, Any]] = [
        ("status", label(job.status) + (f" ({job.stage})" if job.stage and job.stage != job.status else "")),
        ("dataset", Path(details["dataset"].get("dataset_path", "—")).name),
        ("progress", f"step {progress['step']} / {progress['total_steps'] or '—'}, epoch {progress['epoch']:.2f}"),
        ("created", job.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("duration", details["duration"]),
        ("cost", f"{money(job.actual_cost_usd)} (estimate {money(job.estimated_cost_usd)})"),
        (
            "loss",
            f"final {_num(details['loss']['final'])}, best {_num(details['loss']['best'])}, "
            f"best eval {_num(details['loss']['best_eval'])}",
        ),
    ]
    evaluation = details["evaluation"]
    if evaluation.get("adapter_perplexity") is not None:
        rows.append(
            (
                "perplexity",
                f"base {_num(evaluation['base_perplexity'])} → adapter {_num(evaluation['adapter_perplexity'])}",
            )
        )
    best = evaluation.get("best_checkpoint")
    if best:
        rows.append(("packaged", f"checkpoint-{best['step']}, lowest eval loss {_num(best['eval_loss'])}"))
    if evaluation.get("judge") or evaluation.get("human"):
        from tui.cli.evaluate import human_line, judge_line

        rows.append(("judge", judge_line(evaluation.get("judge"))))
        rows.append(("raters", human_line(evaluation.get("human"))))
    if job.parent_job_id:
        rows.append(("retry of", short_id(job.parent_job_id)))
    if job.workdir:
        rows.append(("workdir", job.workdir))
    print_table(["", ""], rows, header=False, flexible=("",))
    print_table(
        ["target", "status", "measured"], target_rows(details["targets"]), title="Targets", flexible=("measured",)
    )
    if details["error"] or job.error_message:
        error = details["error"] or {}
        click.secho(f"error ({job.error_category}): {job.error_message}", fg="red")
        if job.error_hint:
            click.echo(f"hint: {job.error_hint}")
        if error.get("suggested"):
            suggested = ", ".join(f"{k}={v}" for k, v in error["suggested"].items())
            click.echo(f"suggested for a retry: {suggested} (lorapod retry {short_id(job.id)} --suggested)")
    if details["attempts"]:
        print_table(
            ["attempt", "started", "ended", "cost", "outcome"],
            [
                (
                    a["number"],
                    a["started_at"][:19],
                    (a["ended_at"] or "—")[:19],
                    money(a["cost_usd"]),
                    a["outcome"] or "—",
                )
                for a in details["attempts"]
            ],
            title="Attempts",
        )
    if details["artifacts"]:
        print_table(
            ["package", "size", "sha256"],
            [(a["kind"], f"{a['size_bytes'] / 1e6:.1f} MB", (a["sha256"] or "")[:16]) for a in details["artifacts"]],
            title="Packages",
        )


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}" if value < 100 else f"{value:,.1f}"


@click.command()
@JOB_ARGUMENT
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--json", "as_json", is_flag=True, help="JSON: one document, or with -f one line per chunk read.")
def logs(job_id: str, follow: bool, as_json: bool) -> None:
    """The engine's log of a job (-f: follow it)."""
    context = open_context()
    supervisor = context.supervisor()
    job = context.job(job_id)
    current = supervisor.handle(job.id)
    if current is None:
        raise click.ClickException(f"job {short_id(job.id)} has not run yet (status: {job.status})")
    attempt, handle = current
    provider = supervisor.provider(job.provider)
    offset = 0

    def show_text(text: str, *, last: bool = False) -> None:
        if not as_json:
            click.echo(text, nl=False)
        elif follow and (text or last):  # JSON Lines: a chunk per line, the last one says the job ended
            document = {"job_id": str(job.id), "attempt": attempt.number, "text": text, "offset": offset, "end": last}
            click.echo(json.dumps(document, ensure_ascii=False))
        elif not follow:
            emit_json({"job_id": str(job.id), "short_id": short_id(job.id), "attempt": attempt.number,
                       "status": job.status, "text": text, "offset": offset})  # fmt: skip

    while True:
        text, offset = provider.logs(RunHandle.model_validate(attempt.handle), offset)
        if text or not follow:
            show_text(text)
        if not follow:
            return
        if not text:
            job = context.job(str(job.id))
            if job.status in TERMINAL or provider.state(handle).value in ("exited", "lost"):
                supervisor.catch_up([job.id])
                text, offset = provider.logs(handle, offset)
                show_text(text, last=True)
                return
            time.sleep(0.5)


@click.command("export")
@JOB_ARGUMENT
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File (default: stdout).")
def export_metrics(job_id: str, fmt: str, output: Path | None) -> None:
    """A job's metrics history: one row per logged step."""
    context = open_context()
    job = _refreshed(context, job_id)
    columns = ["step", *METRIC_FIELDS, "recorded_at"]
    rows = [
        {name: getattr(m, name) for name in columns} | {"recorded_at": m.recorded_at.isoformat()}
        for m in metrics_history(context.ledger, job.id)
    ]
    if fmt == "json":
        text = json.dumps({"job_id": str(job.id), "metrics": rows}, indent=2)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"{len(rows)} rows written to {output}", err=True)


@click.command()
@click.argument("job_ids", metavar="JOB JOB…", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def compare(job_ids: tuple[str, ...], as_json: bool) -> None:
    """Jobs side by side: final and best loss, perplexities, duration, cost, and what their configs change."""
    if len(job_ids) < 2:
        raise click.UsageError("give at least two jobs")
    context = open_context()
    jobs = [_refreshed(context, j) for j in job_ids]
    details = [job_details(context, job) for job in jobs]
    specs = [job_spec(job) for job in jobs]
    fields: dict[str, list[Any]] = {}
    for other in specs[1:]:
        for change in diff(specs[0], other):
            if change.field not in ("job_id", "name", "dataset_sha256"):
                fields.setdefault(change.field, [])
    config = {name: [_flat(spec).get(name) for spec in specs] for name in fields}
    if as_json:
        emit_json(
            {
                "jobs": [{k: d[k] for k in COMPARED_KEYS} for d in details],
                "config_diff": config,
            }
        )
        return
    header = ["", *(d["short_id"] for d in details)]
    rows: list[list[Any]] = [
        ["status", *(label(d["status"]) for d in details)],
        ["final loss", *(_num(d["loss"]["final"]) for d in details)],
        ["best loss", *(_num(d["loss"]["best"]) for d in details)],
        ["best eval loss", *(_num(d["loss"]["best_eval"]) for d in details)],
        ["base perplexity", *(_num(d["evaluation"].get("base_perplexity")) for d in details)],
        ["adapter perplexity", *(_num(d["evaluation"].get("adapter_perplexity")) for d in details)],
        *_target_comparison(details),
        ["duration", *(d["duration"] for d in details)],
        ["cost", *(money(d["cost"]["actual_usd"]) for d in details)],
    ]
    rows += [[name, *(str(v) for v in values)] for name, values in config.items()]
    print_table(header, rows)


COMPARED_KEYS = ("id", "short_id", "name", "status", "duration", "cost", "loss", "evaluation", "targets")


def _target_comparison(details: list[dict[str, Any]]) -> list[list[Any]]:
    """A row per target: each job's status."""
    columns = [target_rows(d["targets"]) for d in details]
    return [[f"target: {name}", *(rows[i][1] for rows in columns)] for i, (name, _, _) in enumerate(columns[0])]


def _flat(spec: Any) -> dict[str, Any]:
    from engine.config import flatten

    return flatten(spec)


@click.command()
@JOB_ARGUMENT
@click.option(
    "--package", "kind", type=click.Choice(["adapter", "full", "deploy"]), default="adapter", show_default=True
)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Folder to copy it into.")
@click.option("--url", "share", is_flag=True, help="Print a signed URL that fetches the package, instead.")
@click.option(
    "--expires", type=click.IntRange(60, 7 * 24 * 3600), default=3600, show_default=True, help="Seconds --url lasts."
)
@click.option("--path", "path_only", is_flag=True, help="Print where the package is stored (to copy), instead.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result document (for scripts).")
def download(
    job_id: str, kind: str, output: Path | None, share: bool, expires: int, path_only: bool, as_json: bool
) -> None:
    """Copy a job's package into a folder, verifying its sha256 and its manifest (or share it: --url, --path)."""
    if share and path_only:
        raise click.UsageError("--url and --path are alternatives: give one")
    if not (share or path_only) and output is None:
        raise click.UsageError("give -o FOLDER to copy the package into (or --url / --path)")
    context = open_context()
    job = _refreshed(context, job_id)
    if share or path_only:
        from engine.artifacts import is_store_uri, storage_path
        from store.artifacts import artifact_store

        artifacts = list_artifacts(context.ledger, job.id, kind)
        if not artifacts:
            raise click.ClickException(f"job {short_id(job.id)} has no {kind} package (status: {job.status})")
        artifact = artifacts[-1]
        uri = artifact.storage_path
        about = {"action": "download", "job_id": str(job.id), "package": kind, "sha256": artifact.sha256}
        if path_only:
            path = storage_path(uri)
            emit_json({**about, "storage_path": path}) if as_json else click.echo(path)
        elif not is_store_uri(uri):
            raise click.ClickException(
                f"the {kind} package of job {short_id(job.id)} is not in an artifact store (it stayed in {uri}); "
                "set artifact_store to supabase for jobs whose packages you want to share"
            )
        else:
            url = artifact_store(context.settings, uri).signed_url(uri, expires)
            emit_json({**about, "url": url, "expires_s": expires}) if as_json else click.echo(url)
        sys.exit(0)
    assert output is not None
    target = context.supervisor().download(job.id, kind, output)
    if as_json:
        sha256 = next((a.sha256 for a in reversed(list_artifacts(context.ledger, job.id, kind))), None)
        emit_json({"action": "download", "job_id": str(job.id), "package": kind, "path": str(target),
                   "size_bytes": target.stat().st_size, "sha256": sha256, "verified": True})  # fmt: skip
        sys.exit(0)
    click.echo(
        f"{target} ({target.stat().st_size / 1e6:.1f} MB): sha256 verified against the ledger, manifest verified"
    )
    sys.exit(0)

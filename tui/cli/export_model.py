"""``lorapod export-model``: a job's adapter, or its merged model, as a folder with a model card, or on the Hub."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from remote.exports import (
    hub_licence,
    merge_locally,
    merge_preflight,
    push_folder,
    unpack_adapter,
)
from store.jobs import short_id
from store.report.data import gather
from store.report.model_card import model_card
from store.status import JobStatus
from tui.cli.common import JOB_ARGUMENT, open_context
from tui.cli.output import emit_json


def _check_options(output: Path | None, repo_id: str | None, private: bool) -> None:
    if output is None and repo_id is None:
        raise click.UsageError("give -o FOLDER, --push-to-hub REPO, or both")
    if private and repo_id is None:
        raise click.UsageError("--private goes with --push-to-hub")
    if repo_id is not None and repo_id.count("/") != 1:
        raise click.UsageError(f"--push-to-hub {repo_id}: expected owner/name")
    if output is not None and output.exists() and any(output.iterdir()):
        raise click.UsageError(f"-o {output}: not empty; give a new or empty folder")


@click.command("export-model")
@JOB_ARGUMENT
@click.option("--merged", is_flag=True, help="Merge the adapter into the base model's weights (bf16 safetensors).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Folder to write it into.")
@click.option("--push-to-hub", "repo_id", metavar="REPO", help="Upload it to this Hugging Face Hub repo (owner/name).")
@click.option("--private", is_flag=True, help="With --push-to-hub: create the repo private.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result document (for scripts).")
def export_model(
    job_id: str, merged: bool, output: Path | None, repo_id: str | None, private: bool, as_json: bool
) -> None:
    """Export a finished job's adapter (or, with --merged, the base model with it merged) with a model card:
    into a folder (-o), to the Hugging Face Hub (--push-to-hub, token from HF_TOKEN), or both."""
    _check_options(output, repo_id, private)
    context = open_context()
    job = context.job(job_id)
    if job.status != JobStatus.COMPLETED:
        raise click.ClickException(f"job {short_id(job.id)} is {job.status}: only a completed job has an adapter")
    token = context.settings.hf_token.get_secret_value() if context.settings.hf_token else None
    if repo_id is not None and not token:
        raise click.ClickException("--push-to-hub needs a Hugging Face token: set HF_TOKEN (lorapod config show)")
    report = gather(context.ledger, job)
    with tempfile.TemporaryDirectory(prefix="lorapod-export-") as scratch:
        work = Path(scratch)
        target = output or work / "export"
        package = context.supervisor().download(job.id, "adapter", work / "package")
        if merged:
            merge_preflight(report.spec, target)
            adapter = unpack_adapter(package, work / "adapter")
            if not as_json:
                click.echo(f"merging the adapter into {job.base_model} (bf16) …", err=True)
            merge_locally(adapter, job.base_model, target, models_dir=context.settings.paths.models_dir, token=token)
        else:
            unpack_adapter(package, target)
        card = model_card(
            report, repo_id=repo_id or f"lorapod-{short_id(job.id)}", merged=merged,
            licence=hub_licence(job.base_model, merged=merged, token=token),
        )  # fmt: skip
        (target / "README.md").write_text(card, encoding="utf-8")
        url = None
        if repo_id is not None and token is not None:
            what = "merged model" if merged else "LoRA adapter"
            url = push_folder(target, repo_id, private=private, token=token,
                              message=f"lorapod job {short_id(job.id)}: {what} for {job.base_model}")  # fmt: skip
        files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    if as_json:
        emit_json({
            "action": "export-model", "job_id": str(job.id), "merged": merged,
            "path": str(output.absolute()) if output else None, "files": files,
            "repo_id": repo_id, "private": private if repo_id else None, "commit_url": url,
        })  # fmt: skip
        return
    if output is not None:
        click.echo(f"{'merged model' if merged else 'adapter'} written to {output} ({len(files)} files, README.md)")
    if url is not None:
        click.echo(f"pushed to {repo_id}{' (private)' if private else ''}: {url}")

"""``lorapod export-model``: a job's adapter, or its merged model, as a folder with a model card, or on the Hub."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from engine.config import JobSpec
from remote.exports import (
    ExportError,
    TooBigHere,
    download_preflight,
    hub_licence,
    merge_locally,
    merge_preflight,
    push_folder,
    unpack_adapter,
)
from remote.runpod.merge_download import PARTIAL_MARKER
from store.jobs import job_spec, short_id
from store.models import TrainingJob
from store.report.data import gather
from store.report.model_card import model_card
from store.status import JobStatus
from tui.cli.common import JOB_ARGUMENT, Context, confirm, open_context
from tui.cli.output import emit_json

if TYPE_CHECKING:
    from remote.runpod.merge import MergeOnPod


def _check_options(output: Path | None, repo_id: str | None, private: bool, resumed: bool) -> None:
    if output is None and repo_id is None:
        raise click.UsageError("give -o FOLDER, --push-to-hub REPO, or both")
    if private and repo_id is None:
        raise click.UsageError("--private goes with --push-to-hub")
    if repo_id is not None and repo_id.count("/") != 1:
        raise click.UsageError(f"--push-to-hub {repo_id}: expected owner/name")
    if output is not None and output.exists() and any(output.iterdir()) and not resumed:
        raise click.UsageError(f"-o {output}: not empty; give a new or empty folder")


@click.command("export-model")
@JOB_ARGUMENT
@click.option("--merged", is_flag=True, help="Merge the adapter into the base model's weights (bf16 safetensors).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Folder to write it into.")
@click.option("--push-to-hub", "repo_id", metavar="REPO", help="Upload it to this Hugging Face Hub repo (owner/name).")
@click.option("--private", is_flag=True, help="With --push-to-hub: create the repo private.")
@click.option(
    "--on-pod", is_flag=True,
    help="With --merged, for a RunPod job: merge on a pod (the default when the model is too big for this machine).",
)  # fmt: skip
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Agree to a merge pod's rate without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result document (for scripts).")
def export_model(
    job_id: str, merged: bool, output: Path | None, repo_id: str | None, private: bool, on_pod: bool,
    assume_yes: bool, as_json: bool,
) -> None:  # fmt: skip
    """Export a finished job's adapter (or, with --merged, the base model with it merged) with a model card:
    into a folder (-o), to the Hugging Face Hub (--push-to-hub, token from HF_TOKEN), or both. A RunPod job's
    model too big to merge here is merged on a pod (its rate shown first) and downloaded."""
    # A merge pod's download cut off in this folder: it goes on there, from a merge pod again.
    resumed = merged and output is not None and (output / PARTIAL_MARKER).is_file()
    _check_options(output, repo_id, private, resumed)
    on_pod = on_pod or resumed
    if on_pod and not merged:
        raise click.UsageError("--on-pod goes with --merged")
    context = open_context()
    job = context.job(job_id)
    if job.status != JobStatus.COMPLETED:
        raise click.ClickException(f"job {short_id(job.id)} is {job.status}: only a completed job has an adapter")
    token = context.settings.hf_token.get_secret_value() if context.settings.hf_token else None
    if repo_id is not None and not token:
        raise click.ClickException("--push-to-hub needs a Hugging Face token: set HF_TOKEN (lorapod config show)")
    report = gather(context.ledger, job)
    pod: MergeOnPod | None = None
    with tempfile.TemporaryDirectory(prefix="lorapod-export-") as scratch:
        work = Path(scratch)
        target = output or work / "export"
        say = (lambda _text: None) if as_json else (lambda text: click.echo(text, err=True))
        if merged and (on_pod or not _fits_here(report.spec, target, job, say)):
            pod = _merge_on_pod(context, job, target, assume_yes, say)
        elif merged:
            adapter = unpack_adapter(
                context.supervisor().download(job.id, "adapter", work / "package"), work / "adapter"
            )
            say(f"merging the adapter into {job.base_model} (bf16) …")
            merge_locally(adapter, job.base_model, target, models_dir=context.settings.paths.models_dir, token=token)
        else:
            unpack_adapter(context.supervisor().download(job.id, "adapter", work / "package"), target)
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
            "merged_on": ("pod" if pod else "local") if merged else None, "pod": pod.as_dict() if pod else None,
        })  # fmt: skip
        return
    if output is not None:
        click.echo(f"{'merged model' if merged else 'adapter'} written to {output} ({len(files)} files, README.md)")
    if url is not None:
        click.echo(f"pushed to {repo_id}{' (private)' if private else ''}: {url}")


def _fits_here(spec: JobSpec, target: Path, job: TrainingJob, say: Callable[[str], None]) -> bool:
    """Whether the merge can run on this machine; for a RunPod job that cannot, the reason (the pod is offered)."""
    try:
        merge_preflight(spec, target)
    except TooBigHere as exc:
        if job.provider != "runpod":
            raise
        say(f"{exc.summary}: it can be merged on a RunPod pod instead")
        return False
    return True


def _merge_on_pod(
    context: Context, job: TrainingJob, target: Path, assume_yes: bool, say: Callable[[str], None]
) -> MergeOnPod:
    """Merge on a pod, its rate agreed to first, and download the merged files into ``target``."""
    from remote.runpod.merge import RunPodMerges

    if job.provider != "runpod":
        raise ExportError(
            f"job {short_id(job.id)} ran on {job.provider}: only a RunPod job's adapter is merged on a pod"
        )
    spec = job_spec(job)
    download_preflight(spec, target)  # the download's room here, checked before anything is rented
    merges = RunPodMerges(context.settings, context.ledger)
    quote = merges.quote(job)
    say(f"the merge needs {quote.describe()}")
    if not confirm(f"Start a merge pod at ${quote.rate_usd_per_hour:.2f}/h?", assume_yes):
        raise click.Abort()
    return merges.run(quote, target, say)

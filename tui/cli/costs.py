"""``lorapod estimate`` and ``lorapod costs``: what a job would cost, what the month has spent, and what
estimates rest on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from store.budget import may_start, month_alerts, month_spend, monthly_totals
from store.costs import calibration, throughput_summary
from store.costs import estimate as estimate_cost
from store.settings import load_settings
from store.throughput import figure
from tui.cli.calibrate import calibrate
from tui.cli.common import open_ledger
from tui.cli.output import emit_json, hours, money, print_table, warn
from tui.cli.presets import SET_HELP, resolve_preset

if TYPE_CHECKING:
    from engine.config import JobSpec


@click.command()
@click.option("--tokens", type=click.IntRange(min=1), default=None, help="Tokens to train per epoch.")
@click.option(
    "--dataset",
    "dataset_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Count the tokens per epoch from a dataset file instead (its train split, in the preset's mode).",
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Tokenizer for --dataset (tokenizer.json or a model folder); without it, ≈4 characters per token.",
)
@click.option("--preset", "preset_name", default=None, help="Preset giving epochs and model (default: settings).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--gpu", default=None, help='RunPod GPU type id or label, e.g. "NVIDIA H100 80GB HBM3".')
@click.option("--gpu-count", type=click.IntRange(1, 8), default=None, help="GPUs in the pod.")
@click.option("--cloud", type=click.Choice(["SECURE", "COMMUNITY"], case_sensitive=False), default=None)
@click.option("--weights-cached", is_flag=True, help="The model's weights are already on the network volume.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def estimate(
    tokens: int | None,
    dataset_path: Path | None,
    tokenizer: Path | None,
    preset_name: str | None,
    overrides: tuple[str, ...],
    gpu: str | None,
    gpu_count: int | None,
    cloud: str | None,
    weights_cached: bool,
    as_json: bool,
) -> None:
    """Duration and cost range of a job with a preset, and whether the budget allows it.

    Give the tokens to train per epoch with --tokens, or a dataset file with --dataset to count them.
    """
    if (tokens is None) == (dataset_path is None):
        raise click.UsageError("give exactly one of --tokens N and --dataset FILE")
    if tokenizer is not None and dataset_path is None:
        raise click.UsageError("--tokenizer counts the tokens of --dataset; give --dataset FILE too")
    settings = load_settings()
    preset = resolve_preset(preset_name or settings.default_preset, overrides)
    spec = preset.to_spec()
    counted = None
    if dataset_path is not None:
        counted = _dataset_tokens(dataset_path, tokenizer, spec, gpu_count or spec.resources.gpu_count, as_json)
        tokens = counted["tokens_per_epoch"]
    assert tokens is not None
    resources = spec.resources
    model_b = spec.parameters_b()
    if model_b is None:
        raise click.UsageError(f"cannot tell the size of {spec.base_model!r}; add --set model_size_b=N (billions)")
    ledger = open_ledger(settings)
    result = estimate_cost(
        tokens * spec.hyperparameters.num_epochs,
        model_b,
        gpu or resources.gpu_types[0],
        gpu_count=gpu_count or resources.gpu_count,
        cloud_type=(cloud or resources.cloud_type.value).upper(),
        settings=settings,
        calibration=calibration(ledger),
        weights_cached=weights_cached,
    )
    month = month_spend(ledger)
    decision = may_start(settings, month, result.cost[1])
    if as_json:
        emit_json(
            {
                "preset": preset.name,
                "base_model": spec.base_model,
                "model_size_b": model_b,
                "tokens_per_epoch": tokens,
                "tokens_from": counted or "--tokens",
                "epochs": spec.hyperparameters.num_epochs,
                **result.as_dict(),
                "budget": decision.as_dict(),
            }
        )
        return
    low, high = result.cost
    if counted is not None:
        how = (
            "estimated at ≈4 characters per token"
            if counted["tokens_estimated"]
            else f"tokenizer {counted['tokenizer']}"
        )
        click.echo(f"dataset {dataset_path}: {counted['train_examples']:,} training examples, {counted['mode']} mode")
        click.echo(f"{tokens:,} tokens per epoch ({how})")
        click.echo(
            f"{counted['steps_per_epoch']:,} optimizer steps per epoch: {counted['packed_sequences']:,} packed "
            f"sequences ÷ a global batch of {counted['global_batch']} (batch × accumulation × GPUs)"
        )
    click.echo(
        f"{preset.name}: {spec.base_model} ({model_b:g}B), {tokens:,} tokens × {spec.hyperparameters.num_epochs} "
        f"epochs = {result.tokens:,} tokens"
    )
    click.echo(
        f"on {result.gpu_count} × {result.gpu_label} ({result.cloud_type.lower()}, "
        f"{money(result.price_per_gpu_hour)}/GPU-h, {result.price_source})"
    )
    tps_low, tps_high = result.tokens_per_second
    click.echo(f"throughput {figure(tps_low)}–{figure(tps_high)} tokens/s, resting on {result.throughput_source}")
    if result.gpu_count > 1:
        click.echo(f"speed-up {result.scaling['label']}")
    click.echo(
        f"training {hours(result.training_hours[0])}–{hours(result.training_hours[1])}, "
        f"overheads {hours(result.overhead_hours[0])}–{hours(result.overhead_hours[1])}"
    )
    click.secho(f"estimate: {hours(result.hours[0])}–{hours(result.hours[1])}, {money(low)}–{money(high)}", bold=True)
    for alert in decision.alerts:
        warn(alert)
    if decision.allowed:
        click.echo(
            f"budget: allowed ({month.month} spent {money(month.spent)} of {money(settings.monthly_budget_usd)})"
        )
    else:
        for reason in decision.reasons:
            click.secho(f"budget: refused — {reason}", fg="red")


def _dataset_tokens(path: Path, tokenizer: Path | None, spec: JobSpec, gpus: int, as_json: bool) -> dict[str, Any]:
    """The tokens one epoch trains on, the train split of ``path`` as the job would convert it, and its optimizer
    steps on ``gpus`` GPUs (the count ``lorapod dataset stats`` and the engine give)."""
    from engine.dataset import ConvertOptions
    from engine.dataset.stats import dataset_stats
    from tui.cli.dataset import load_tokenizer, prepared_or_exit

    options = ConvertOptions.from_spec(spec.dataset, spec.hyperparameters.max_seq_length)
    prepared = prepared_or_exit(path, options, load_tokenizer(tokenizer), as_json)
    figures = dataset_stats(prepared, spec.hyperparameters, gpus)
    return {
        "dataset": str(path),
        "mode": options.mode.value,
        "train_examples": len(prepared.train),
        "tokens_per_epoch": sum(e.meta["tokens"] for e in prepared.train),
        "tokens_estimated": prepared.counter.estimated,
        "tokenizer": prepared.counter.name,
        "packed_sequences": figures.packed_sequences,
        "steps_per_epoch": figures.steps_per_epoch,
        "global_batch": figures.batch_size * figures.gradient_accumulation_steps * gpus,
    }


@click.group(invoke_without_command=True)
@click.option("--months", type=click.IntRange(1, 120), default=12, help="Months of history to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def costs(ctx: click.Context, months: int, as_json: bool) -> None:
    """This month's spending against the budget, active cost, average per job, totals per month, and what
    estimates rest on.

    `lorapod costs calibrate REPORT` records a GPU's throughput measured by `python -m engine bench --json`.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings()
    ledger = open_ledger(settings)
    month = month_spend(ledger)
    history = monthly_totals(ledger, months)
    alerts = month_alerts(settings, month)
    remaining = settings.monthly_budget_usd - month.spent
    bases = throughput_summary(ledger, settings)
    if as_json:
        emit_json(
            {
                **month.as_dict(),
                "budget": settings.monthly_budget_usd,
                "remaining": remaining,
                "alert_thresholds": settings.alert_thresholds,
                "alerts": alerts,
                "months": history,
                "estimates_rest_on": bases,
            }
        )
        return
    print_table(
        ["", ""],
        header=False,
        rows=[
            ("spent", f"{money(month.spent)} of {money(settings.monthly_budget_usd)}"),
            ("remaining", money(remaining)),
            ("active jobs", f"{month.active_jobs} ({money(month.active_cost)} so far)"),
            ("average per finished job", money(month.average_per_job)),
        ],
        title=f"This month ({month.month}, UTC)",
    )
    for alert in alerts:
        warn(alert)
    if history:
        print_table(
            ["month", "spent", "jobs"], [(h["month"], money(h["spent"]), h["jobs"]) for h in history], title="Per month"
        )
    print_bases(bases)


costs.add_command(calibrate)


def print_bases(bases: dict[str, Any]) -> None:
    """What estimates rest on, in the order tried, the one in use marked (lines, not a table: never cut short)."""
    jobs, bench = bases["jobs"], bases["bench"]
    measured = "; ".join(f"{m['gpu_id']}: {m['label']}" for m in bench)
    rows = [
        ("jobs", f"completed jobs: {jobs['label'] if jobs else 'none yet'}"),
        ("bench", f"bench measurements: {measured or 'none (`lorapod costs calibrate REPORT` records one)'}"),
        ("public anchors", bases["public_anchors"]),
    ]
    click.echo("\nEstimates rest on (first found wins):")
    for number, (kind, text) in enumerate(rows, 1):
        mark = "→ in use" if kind == bases["in_use"]["kind"] else "        "
        click.echo(f"{mark} {number}. {text}")

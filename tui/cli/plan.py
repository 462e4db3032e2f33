"""``lorapod run --plan``: what a run would do (pod, sizes, estimate, limits), creating nothing."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from tui.cli.output import emit_json, money

if TYPE_CHECKING:
    from remote.supervisor import Plan


def plan_data(plan: Plan) -> dict[str, Any]:
    """The plan as plain data: no env value and no secret, only names."""
    spec = plan.spec
    problems = list(plan.launch.get("problems", []))
    if not plan.decision.allowed:
        problems += [f"refused by the budget: {reason}" for reason in plan.decision.reasons]
    return {
        "base_model": spec.base_model,
        "preset": spec.preset,
        "provider": spec.resources.provider.value,
        "dataset": {
            "path": spec.dataset.dataset_path,
            "sha256": spec.dataset.dataset_sha256,
            "examples": plan.validation.get("examples"),
            "tokens": plan.validation.get("tokens"),
            "tokens_estimated": bool(plan.validation.get("tokens_estimated")),
        },
        "launch": {key: value for key, value in plan.launch.items() if key != "problems"},
        "estimate": plan.estimate.as_dict() if plan.estimate is not None else None,
        "limits": {key: value for key, value in asdict(plan.limits).items() if key != "rate_usd_per_hour"},
        "budget": plan.decision.as_dict(),
        "problems": problems,
        "creates_nothing": True,
    }


def print_plan(data: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        emit_json(data)
        return
    launch = data["launch"]
    click.echo(f"plan: {data['preset'] or 'custom'} · {data['base_model']} · {data['provider']} (nothing is created)")
    dataset = data["dataset"]
    about = "≈" if dataset["tokens_estimated"] else ""
    click.echo(
        f"dataset: {dataset['path']} ({about}{dataset['examples']} examples, {about}{dataset['tokens'] or 0:,} tokens)"
    )
    if "create_request" in launch:
        _print_pod(launch)
    estimate = data["estimate"]
    if estimate is not None:
        low, high = estimate["cost_usd"]
        hours = estimate["hours"]
        click.echo(
            f"estimate: {money(low)}–{money(high)}, {hours[0]:.1f}–{hours[1]:.1f} h on {estimate['gpu_label']} "
            f"at {money(estimate['rate_usd_per_hour'])}/h ({estimate['throughput_source']})"
        )
    limits = data["limits"]
    click.echo(f"limits: {money(limits['ceiling_usd'])} — {limits['ceiling_name']}; "
               f"{limits['max_hours']:g} h — {limits['max_hours_name']}")  # fmt: skip
    delivered = launch.get("secrets_delivered_after_start")
    if delivered:
        click.echo(f"secrets, sent once the pod is up (never in its env): {', '.join(delivered)}")
    for warning in launch.get("warnings", []):
        click.secho(f"warning: {warning}", fg="yellow")
    for alert in data["budget"]["alerts"]:
        click.secho(f"budget: {alert}", fg="yellow")
    for problem in data["problems"]:
        click.secho(f"refused: {problem}", fg="red")
    if not data["problems"]:
        click.echo("nothing stops it: run the same command without --plan to start it")


def _print_pod(launch: dict[str, Any]) -> None:
    click.echo(f"image: {launch['image'] or '(none set)'}")
    click.echo("GPU types, in the order tried:")
    for gpu in launch["gpu_types"]:
        memory = f"{gpu['memory_gb']:g} GB" if gpu["memory_gb"] else "memory unknown"
        click.echo(f"  {gpu['id']} ({memory}){'' if gpu['fits'] else ' — skipped: the job does not fit'}")
    disk = launch["disk"]
    click.echo(
        f"disk: needs {disk['needed_gb']} GB on the volume (weights {disk['weights_gb']:g} GB from "
        f"{disk['weights_source']}, checkpoints {disk['checkpoints_gb']:g}, margin {disk['margin_gb']:g})"
    )
    volume = disk["network_volume"]
    if volume:
        click.echo(f"  network volume {volume['id']}: {volume['size_gb']} GB")
    else:
        click.echo(f"  volumeInGb {disk['volumeInGb']}")
    click.echo(f"  containerDiskInGb {disk['containerDiskInGb']}")
    memory = launch["gpu_memory"]
    if memory:
        click.echo(
            f"GPU memory: about {memory['needed_gb']:g} GB per GPU (4-bit weights {memory['weights_gb']:g}, LoRA and "
            f"optimizer {memory['lora_gb']:g}, activations {memory['activations_gb']:g}, CUDA {memory['reserve_gb']:g})"
        )
    click.echo("create request (POST /pods; env: names only):")
    body = launch["create_request"]
    for key, value in body.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        click.echo(f"  {key}: {shown}")

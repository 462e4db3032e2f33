"""``lorapod presets``: list, show and diff the job presets, with ``--set`` overrides."""

from __future__ import annotations

from typing import Any

import click

import presets as preset_files
from engine.config import SpecError
from presets import Preset, PresetError
from tui.cli.output import emit_json, print_table

SET_HELP = "Override a field, e.g. --set lora_r=32 (repeatable)."


def resolve_preset(name: str, overrides: tuple[str, ...]) -> Preset:
    """A preset with overrides applied; a bad name or value is a usage error (exit 2) naming the field."""
    try:
        preset = preset_files.get(name)
    except PresetError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    if not overrides:
        return preset
    try:
        return preset.with_overrides(overrides)
    except SpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from None


@click.group()
def presets() -> None:
    """List, show and compare job presets."""


@presets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_presets(as_json: bool) -> None:
    """The presets and what each is for."""
    items = list(preset_files.all_presets().values())
    if as_json:
        emit_json([p.describe() for p in items])
        return
    rows = []
    for p in items:
        h = p.hyperparameters
        rows.append(
            (
                p.name + (" *" if p.default else ""),
                p.base_model.rsplit("/", 1)[-1],
                f"r{h.lora_r} α{h.lora_alpha}",
                _short_float(h.learning_rate),
                h.num_epochs,
                h.batch_size * h.gradient_accumulation_steps,
                "4-bit" if h.load_in_4bit else "full",
            )
        )
    print_table(["preset", "model", "LoRA", "lr", "epochs", "batch", "weights"], rows)
    for p in items:
        click.echo(f"  {p.name}: {p.description}")
    click.echo("* default  ·  batch = batch_size × gradient_accumulation_steps  ·  `lorapod presets show NAME`")


@presets.command("show")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(name: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Every value of preset NAME (defaults included)."""
    described = resolve_preset(name, overrides).describe()
    if as_json:
        emit_json(described)
        return
    click.echo(f"{described['name']}: {described['description']}")
    click.echo(f"base model: {described['base_model']} ({described['model_size_b']}B)")
    for section in ("hyperparameters", "resources", "dataset"):
        print_table(["field", "value"], [(k, _fmt(v)) for k, v in described[section].items()], title=section)


def _short_float(value: float) -> str:
    """1e-4 rather than 0.0001."""
    mantissa, _, exponent = f"{value:.0e}".partition("e")
    return f"{mantissa}e{int(exponent)}" if value < 0.01 else f"{value:g}"


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "—" if value is None else str(value)


@presets.command("diff")
@click.argument("name")
@click.argument("other", required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def diff(name: str, other: str | None, overrides: tuple[str, ...], as_json: bool) -> None:
    """What changes from preset NAME to preset OTHER, or to NAME with --set overrides."""
    if other is None and not overrides:
        raise click.UsageError("give another preset or at least one --set KEY=VALUE")
    base = resolve_preset(name, ())
    target = resolve_preset(other or name, overrides)
    changes = base.diff(target)
    if as_json:
        emit_json(
            {
                "from": name,
                "to": other or name,
                "changes": [{"field": c.field, "from": c.before, "to": c.after} for c in changes],
            }
        )
        return
    if not changes:
        click.echo("no differences")
        return
    print_table(
        ["field", name, other or f"{name} + --set"], [(c.field, _fmt(c.before), _fmt(c.after)) for c in changes]
    )

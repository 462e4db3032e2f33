"""``lorapod spec``: print a valid job spec for ``python -m engine run``, so nobody writes one by hand."""

from __future__ import annotations

from pathlib import Path

import click

from engine.checksums import sha256_file
from tui.cli.output import emit_json
from tui.cli.presets import SET_HELP, resolve_preset


@click.command()
@click.option("--preset", "preset_name", default=None, help="Preset to start from (default: settings).")
@click.option(
    "--dataset",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The dataset file (its sha256 is recorded, so a changed file is noticed).",
)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--base-model", default=None, help="Hub id or local path instead of the preset's model.")
@click.option("--name", default=None, help="A name for the job.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
def spec(
    preset_name: str | None,
    dataset: Path,
    overrides: tuple[str, ...],
    base_model: str | None,
    name: str | None,
    output: Path | None,
) -> None:
    """Print the JobSpec JSON of a preset applied to a dataset, with overrides."""
    from engine.dataset.source import open_regular
    from store.settings import load_settings

    open_regular(dataset).close()  # a FIFO or a device is refused by name here, not hashed forever
    extra = [f"dataset_sha256={sha256_file(dataset)}"]
    if base_model:
        extra.append(f"base_model={base_model}")
    preset = resolve_preset(preset_name or load_settings().default_preset, (*overrides, *extra))
    job_spec = preset.to_spec(str(dataset.resolve()), ())
    if name is not None:  # --name wins over --set name=…
        job_spec = job_spec.model_copy(update={"name": name})
    if output is None:
        emit_json(job_spec.model_dump(mode="json"))
        return
    output.write_text(job_spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
    click.echo(f"spec written to {output}")

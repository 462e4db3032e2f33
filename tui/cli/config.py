"""``lorapod config``: every setting with its source, secrets redacted; change one in config.toml."""

from __future__ import annotations

import click

from store.errors import SettingsError
from store.settings import describe_paths, describe_settings, load_settings, resolve_paths, write_setting
from tui.cli.output import emit_json, print_table


@click.group()
def config() -> None:
    """Show or change settings (secrets are never printed)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show(as_json: bool) -> None:
    """Every setting, where its value came from, and lorapod's folders."""
    settings = load_settings()
    views = describe_settings(settings)
    paths = describe_paths()
    if as_json:
        emit_json(
            {
                "settings": {v.name: {"value": v.value, "source": v.source, "secret": v.secret} for v in views},
                "paths": {v.name: {"value": v.value, "source": v.source} for v in paths},
            }
        )
        return
    print_table(
        ["setting", "value", "source"],
        [(v.name, _display(v.value), v.source) for v in views],
        title="Settings (environment > config.toml > defaults)",
    )
    print_table(["path", "value", "source"], [(v.name, v.value, v.source) for v in paths], title="Folders")


def _display(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, dict)) and not value:
        return "—"
    return str(value)


@config.command("set")
@click.argument("name")
@click.argument("value")
def set_value(name: str, value: str) -> None:
    """Set NAME to VALUE in config.toml (created 0600; comments kept). A bad name or value exits 2."""
    try:
        path = write_setting(name, value)
    except SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME VALUE") from None
    click.echo(f"{name} set in {path}")


@config.command("path")
def path() -> None:
    """Print the config file's path."""
    click.echo(resolve_paths().config_file)

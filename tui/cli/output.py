"""Printing for the command line: JSON for machines, rich tables for people (plain when piped)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console


def emit_json(data: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def console(stderr: bool = False) -> Console:
    """Rich output; when piped, as wide as the content needs (no wrapping at an imagined 80 columns)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 500
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    justify: dict[str, str] | None = None,
    header: bool = True,
    flexible: Sequence[str] = (),
) -> None:
    """An aligned table (rich drops colour itself when piped or when NO_COLOR is set).

    Rows stay on one line: the columns named in ``flexible`` give way (shortened with an ellipsis) when the
    terminal is too narrow.
    """
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        box=box.SIMPLE_HEAD if header else None,
        title_justify="left",
        pad_edge=False,
        show_edge=False,
        show_header=header,
        padding=(0, 1, 0, 0),
    )
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    natural = [max([len(name) if header else 0, *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    # Share what the fixed columns leave among the flexible ones (2 = padding and divider per column).
    out = console()
    fixed = sum(width for width, name in zip(natural, columns, strict=True) if name not in flexible)
    spare = out.width - fixed - 2 * len(columns) - 1
    share = max(6, spare // max(1, sum(name in flexible for name in columns)))
    for width, name in zip(natural, columns, strict=True):
        table.add_column(
            name,
            justify=(justify or {}).get(name, "left"),  # type: ignore[arg-type]
            no_wrap=True,
            overflow="ellipsis",
            width=min(width, share) if name in flexible else width,
        )
    for row in cells:
        table.add_row(*row)
    out.print(table)


def money(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def hours(value: float) -> str:
    """Hours as 'Hh MMm' (or minutes alone under an hour)."""
    minutes = round(value * 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def warn(message: str) -> None:
    click.secho(f"warning: {message}", fg="yellow", err=True)


def is_terminal() -> bool:
    return sys.stdout.isatty()

"""A DataTable whose header always lines up with its rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.widgets import DataTable
from textual.widgets.data_table import RowKey


class Table(DataTable[Any]):
    """DataTable sizes its auto-width columns when it is next idle after rows change, and keeps every line it
    drew before that. A header drawn in between (a worker filling the table while the screen paints) kept its
    old, narrower widths above rows drawn at the new ones, until something else redrew it. Here the drawn
    lines are let go whenever the columns are measured again."""

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        super()._update_dimensions(new_rows)
        self._clear_caches()  # the cells, rows and lines drawn at the old widths
        self.refresh()

"""The jobs table: one page of jobs at a time (so 10,000 jobs stay fast), marks, status with icon and word.

It fits the terminal: Status, progress, duration and cost always show in full; narrower terminals drop
Training file, then Model, then Started; Name takes whatever width is left, shortened with an ellipsis.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual import events
from textual.widgets.data_table import CellDoesNotExist

from store.jobs import JobRow
from tui.cli.common import duration
from tui.status import STATUS_WIDTH, look
from tui.widgets.keyed import NavTable

# (header, sort key) in display order — the sort keys are store.jobs.SORT_KEYS
COLUMNS: list[tuple[str, str | None]] = [
    ("Job", None),
    ("Name", "name"),
    ("Training file", "training_file"),
    ("Model", "base_model"),
    ("Status", "status"),
    ("Progress", "progress"),
    ("Duration", "duration"),
    ("Cost", "cost"),
    ("Started", "started_at"),
]
# Status gets the longest label's width ("◑ preprocessing", 15 cells), so no status is ever cut.
WIDTHS = {
    "Job": 9,
    "Status": STATUS_WIDTH,
    "Progress": 8,
    "Duration": 8,
    "Cost": 9,
    "Started": 11,
    "Model": 14,
    "Training file": 16,
}
SECONDARY = ("Started", "Model", "Training file")  # added in this order while the width allows
NAME_MIN = 12
PADDING = 2  # a DataTable cell's padding, both sides


def layout(width: int) -> tuple[list[str], int]:
    """The columns that fit ``width`` cells, in display order, and the width Name gets."""
    shown = [header for header, _ in COLUMNS if header not in SECONDARY]

    def needed(headers: list[str]) -> int:
        return sum(WIDTHS.get(h, NAME_MIN) for h in headers) + PADDING * len(headers) + 2

    for extra in SECONDARY:
        if needed([*shown, extra]) <= width:
            shown.append(extra)
    order = [header for header, _ in COLUMNS]
    shown.sort(key=order.index)
    name = max(NAME_MIN, width - needed(shown) + NAME_MIN)
    return shown, name


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def status_cell(status: str) -> Text:
    item = look(status)
    return Text(f"{item.icon} {item.word}", style=item.color)


def progress_cell(row: JobRow) -> str:
    if not row.total_steps:
        return "—"
    return f"{row.current_step / row.total_steps:.0%}"


class JobTable(NavTable):
    """Rows keyed by job id; ``selected`` holds the ids marked (● before the id) for compare or export."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.selected: set[str] = set()
        self.rows_by_id: dict[str, JobRow] = {}
        self.shown: list[str] = []
        self.name_width = NAME_MIN
        self._rows: list[JobRow] = []
        self._now: datetime | None = None

    def on_mount(self) -> None:
        self._columns_for(self.size.width or 120)

    def on_resize(self, event: events.Resize) -> None:
        if layout(event.size.width) != (self.shown, self.name_width):
            self._columns_for(event.size.width)
            if self._now is not None:
                self.show(self._rows, self._now)

    def _columns_for(self, width: int) -> None:
        self.shown, self.name_width = layout(width)
        self.clear(columns=True)
        for header in self.shown:
            self.add_column(header, key=header, width=WIDTHS.get(header, self.name_width))

    def _job_cell(self, row: JobRow) -> Text:
        marked = str(row.id) in self.selected
        return Text(("●" if marked else " ") + row.short_id, style="bold" if marked else "")

    def _cells(self, row: JobRow, now: datetime) -> dict[str, Text]:
        stopped = row.status == "interrupted"  # its clock stopped with its process
        return {
            "Job": self._job_cell(row),
            "Name": Text(shorten(row.name or "—", self.name_width)),
            "Training file": Text(shorten(row.training_file_name or "—", WIDTHS["Training file"])),
            "Model": Text(shorten(row.base_model.rsplit("/", 1)[-1], WIDTHS["Model"])),
            "Status": status_cell(row.status),
            "Progress": Text(progress_cell(row)),
            "Duration": Text(duration(row.started_at, row.completed_at or (row.updated_at if stopped else now))),
            "Cost": Text(f"${row.actual_cost_usd:,.2f}"),
            "Started": Text(row.started_at.strftime("%m-%d %H:%M") if row.started_at else "—"),
        }

    def show(self, rows: list[JobRow], now: datetime) -> None:
        """Replace the page, keeping the cursor on the same job when it is still there."""
        keep = self.current_id()
        self._rows, self._now = rows, now
        self.clear()
        self.rows_by_id = {str(row.id): row for row in rows}
        for row in rows:
            # Text cells, not strings: DataTable would parse every string as markup.
            cells = self._cells(row, now)
            self.add_row(*(cells[header] for header in self.shown), key=str(row.id))
        if keep in self.rows_by_id:
            self.move_cursor(row=self.get_row_index(keep))

    def current_id(self) -> str | None:
        if not self.rows_by_id or self.cursor_row < 0:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except CellDoesNotExist:  # an empty or refreshing table has no cell under the cursor
            return None

    def toggle_selected(self) -> str | None:
        key = self.current_id()
        if key is None:
            return None
        if key in self.selected:
            self.selected.discard(key)
        else:
            self.selected.add(key)
        self.update_cell(key, "Job", self._job_cell(self.rows_by_id[key]))
        return key

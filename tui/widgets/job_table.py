"""The jobs table: one page of jobs at a time (so 10,000 jobs stay fast), marks, status with icon and word.

Every column fits the terminal: the fixed ones keep their width and Name, Training file and Model share
what is left, shortened with an ellipsis.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from store.jobs import JobRow
from tui.cli.common import duration
from tui.status import look

# (header, sort key) — the sort keys are store.jobs.SORT_KEYS
COLUMNS: list[tuple[str, str | None]] = [
    ("Job", None),
    ("Name", "name"),
    ("Training file", "training_file"),
    ("Model", "base_model"),
    ("Status", "status"),
    ("Stage", "stage"),
    ("Progress", "progress"),
    ("Duration", "duration"),
    ("Cost", "cost"),
    ("Started", "started_at"),
]
FIXED = {"Job": 9, "Status": 13, "Stage": 9, "Progress": 8, "Duration": 8, "Cost": 8, "Started": 11}
FLEXIBLE = ("Name", "Training file", "Model")
MIN_FLEXIBLE = 8


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def status_cell(status: str) -> Text:
    item = look(status)
    return Text(f"{item.icon} {item.word}", style=item.color)


def progress_cell(row: JobRow) -> str:
    if not row.total_steps:
        return "—"
    return f"{row.current_step / row.total_steps:.0%}"


class JobTable(DataTable[str | Text]):
    """Rows keyed by job id; ``selected`` holds the ids marked (● before the id) for compare or export."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.selected: set[str] = set()
        self.rows_by_id: dict[str, JobRow] = {}
        self.widths = {**FIXED, **dict.fromkeys(FLEXIBLE, 14)}
        self._rows: list[JobRow] = []
        self._now: datetime | None = None

    def on_mount(self) -> None:
        for header, _ in COLUMNS:
            self.add_column(header, key=header, width=self.widths[header])

    def on_resize(self, event: events.Resize) -> None:
        spare = event.size.width - sum(FIXED.values()) - 2 * len(COLUMNS) - 2
        share = max(MIN_FLEXIBLE, spare // len(FLEXIBLE))
        if share != self.widths[FLEXIBLE[0]]:
            self.widths.update(dict.fromkeys(FLEXIBLE, share))
            for name in FLEXIBLE:
                self.columns[name].width = share  # type: ignore[index]
            if self._now is not None:
                self.show(self._rows, self._now)

    def _job_cell(self, row: JobRow) -> Text:
        marked = str(row.id) in self.selected
        return Text(("●" if marked else " ") + row.short_id, style="bold" if marked else "")

    def show(self, rows: list[JobRow], now: datetime) -> None:
        """Replace the page, keeping the cursor on the same job when it is still there."""
        keep = self.current_id()
        self._rows, self._now = rows, now
        self.clear()
        self.rows_by_id = {str(row.id): row for row in rows}
        w = self.widths
        for row in rows:
            # Text cells, not strings: DataTable would parse every string as markup.
            self.add_row(
                self._job_cell(row),
                Text(shorten(row.name or "—", w["Name"])),
                Text(shorten(row.training_file_name or "—", w["Training file"])),
                Text(shorten(row.base_model.rsplit("/", 1)[-1], w["Model"])),
                status_cell(row.status),
                Text(row.stage if row.stage and row.stage != row.status else "—"),
                Text(progress_cell(row)),
                Text(duration(row.started_at, row.completed_at or now)),
                Text(f"${row.actual_cost_usd:,.2f}"),
                Text(row.started_at.strftime("%m-%d %H:%M") if row.started_at else "—"),
                key=str(row.id),
            )
        if keep in self.rows_by_id:
            self.move_cursor(row=self.get_row_index(keep))

    def current_id(self) -> str | None:
        if not self.rows_by_id or self.cursor_row < 0:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except Exception:  # an empty or refreshing table has no cell under the cursor
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

"""The jobs table: one page of jobs at a time (so 10,000 jobs stay fast), multi-select, status with icon."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from store.jobs import JobRow
from tui.cli.common import duration
from tui.status import look

# (header, sort key) — the sort keys are store.jobs.SORT_KEYS
COLUMNS: list[tuple[str, str | None]] = [
    ("", None),
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


def status_cell(status: str) -> Text:
    item = look(status)
    return Text(f"{item.icon} {item.word}", style=item.color)


def progress_cell(row: JobRow) -> str:
    if not row.total_steps:
        return "—"
    return f"{row.current_step}/{row.total_steps} {row.current_step / row.total_steps:4.0%}"


class JobTable(DataTable[str | Text]):
    """Rows keyed by job id; ``selected`` holds the ids marked for compare or export."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.selected: set[str] = set()
        self.rows_by_id: dict[str, JobRow] = {}

    def on_mount(self) -> None:
        for header, _ in COLUMNS:
            self.add_column(header, key=header or "mark")

    def show(self, rows: list[JobRow], now: object) -> None:
        """Replace the page, keeping the cursor on the same job when it is still there."""
        keep = self.current_id()
        self.clear()
        self.rows_by_id = {str(row.id): row for row in rows}
        for row in rows:
            key = str(row.id)
            self.add_row(
                "●" if key in self.selected else " ",
                row.short_id,
                row.name or "—",
                row.training_file_name or "—",
                row.base_model.rsplit("/", 1)[-1],
                status_cell(row.status),
                row.stage if row.stage and row.stage != row.status else "—",
                progress_cell(row),
                duration(row.started_at, row.completed_at or now),  # type: ignore[arg-type]
                f"${row.actual_cost_usd:,.2f}",
                row.started_at.strftime("%m-%d %H:%M") if row.started_at else "—",
                key=key,
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
        self.update_cell(key, "mark", "●" if key in self.selected else " ")
        return key

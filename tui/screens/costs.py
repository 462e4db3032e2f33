"""Costs: this month against the budget, the monthly trend, what each job cost, and the budget settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static
from textual_plotext import PlotextPlot

from store.budget import MonthSpend
from store.jobs import JobPage
from store.settings import SettingsError
from tui.status import label
from tui.widgets.cards import Card

if TYPE_CHECKING:
    from tui.app import LorapodApp

BUDGET_FIELDS = [
    ("monthly_budget_usd", "Monthly budget ($)"),
    ("per_job_ceiling_usd", "Per-job ceiling ($)"),
    ("hard_cap_usd", "Runaway hard cap ($)"),
    ("max_duration_hours", "Max duration (h)"),
    ("alert_thresholds", "Alert thresholds"),
]


class CostsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="costs.back", tooltip="Back"),
        Binding("ctrl+s", "save", "Save budget", id="costs.save", tooltip="Save the budget settings"),
    ]

    @property
    def lorapod(self) -> LorapodApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        with Grid(id="cards"):
            yield Card("Month spent", id="card-spent")
            yield Card("Budget remaining", id="card-remaining")
            yield Card("Active cost", id="card-active")
            yield Card("Average per job", id="card-average")
        with Horizontal(id="costs-body"):
            with Vertical(id="costs-left"):
                yield PlotextPlot(id="trend")
                yield DataTable(id="job-costs", cursor_type="row")
            with Vertical(id="budget-form"):
                yield Static("Budget", classes="section-title")
                for name, text in BUDGET_FIELDS:
                    yield Label(text)
                    yield Input(id=f"set-{name}")
                yield Button("Save (ctrl+s)", variant="primary", id="save")
                yield Static(id="budget-problem", classes="error")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#job-costs", DataTable).add_columns("Job", "Name", "Status", "Cost", "Estimate", "GPU-h")
        settings = self.lorapod.backend.settings
        for name, _ in BUDGET_FIELDS:
            value = getattr(settings, name)
            self.query_one(f"#set-{name}", Input).value = (
                str(value) if not isinstance(value, list) else ", ".join(str(v) for v in value)
            )
        self.load()

    @work(thread=True, exclusive=True)
    def load(self) -> None:
        month, history, jobs = self.lorapod.backend.costs()
        self.app.call_from_thread(self._show, month, history, jobs)

    def _show(self, month: MonthSpend, history: list[dict[str, Any]], jobs: JobPage) -> None:
        if not self.is_mounted:  # a late answer for a screen already closed
            return
        budget = self.lorapod.backend.settings.monthly_budget_usd
        share = month.spent / budget if budget else 0.0
        style = "bold red" if share >= 0.95 else "bold yellow" if share >= 0.8 else "bold"
        self.query_one("#card-spent", Card).show(
            f"${month.spent:,.2f}", f"{share:.0%} of ${budget:,.2f} · {month.month}", style
        )
        self.query_one("#card-remaining", Card).show(
            f"${budget - month.spent:,.2f}", f"${month.committed:,.2f} committed by running jobs"
        )
        self.query_one("#card-active", Card).show(f"${month.active_cost:,.2f}", f"{month.active_jobs} running")
        average = f"${month.average_per_job:,.2f}" if month.average_per_job is not None else "—"
        self.query_one("#card-average", Card).show(average, f"{month.finished_jobs} finished this month")
        plot = self.query_one("#trend", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        months = list(reversed(history))
        if months:
            plt.bar([m["month"] for m in months], [m["spent"] for m in months], width=0.4)
            plt.title("Spent per month ($)")
        else:
            plt.title("Spent per month: no jobs yet")
        plot.refresh()
        table = self.query_one("#job-costs", DataTable)
        table.clear()
        for row in jobs.jobs:
            estimate = f"${row.estimated_cost_usd:,.2f}" if row.estimated_cost_usd else "—"
            table.add_row(
                row.short_id,
                row.name or "—",
                label(row.status),
                f"${row.actual_cost_usd:,.2f}",
                estimate,
                f"{row.gpu_hours:,.2f}" if row.gpu_hours else "—",
                key=str(row.id),
            )

    @on(Button.Pressed, "#save")
    def _pressed(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        values = {name: self.query_one(f"#set-{name}", Input).value.strip() for name, _ in BUDGET_FIELDS}
        self.save(values)

    @work(thread=True, exclusive=True)
    def save(self, values: dict[str, str]) -> None:
        backend = self.lorapod.backend
        try:
            for name, value in values.items():
                current = getattr(backend.settings, name)
                shown = ", ".join(str(v) for v in current) if isinstance(current, list) else str(current)
                if value != shown:
                    backend.save_setting(name, f"[{value}]" if name == "alert_thresholds" else value)
        except SettingsError as exc:
            self.app.call_from_thread(self.query_one("#budget-problem", Static).update, str(exc))
            return
        self.app.call_from_thread(self.query_one("#budget-problem", Static).update, "")
        self.app.call_from_thread(self.notify, "budget settings saved to config.toml", title="Budget")
        self.app.call_from_thread(self.load)

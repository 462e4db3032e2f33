"""Costs: this month against the budget, the monthly trend, what each job cost, and the budget settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Header, Input, Label, Static
from textual_plotext import PlotextPlot

from store.budget import MonthSpend
from store.jobs import JobPage
from store.settings import SettingsError
from tui.errors import ReportsWorkerErrors
from tui.status import label
from tui.widgets.cards import Card
from tui.widgets.keyed import Footer, NavTable

if TYPE_CHECKING:
    from tui.app import LorapodApp

BUDGET_FIELDS = [
    ("monthly_budget_usd", "Monthly budget ($)"),
    ("per_job_ceiling_usd", "Per-job ceiling ($)"),
    ("hard_cap_usd", "Runaway hard cap ($)"),
    ("max_duration_hours", "Max duration (h)"),
    ("alert_thresholds", "Alert thresholds"),
]


# Pydantic's phrases, as a person would say them of a value typed into the form.
PHRASES = [
    ("Input should be a valid number, unable to parse string as a number", "is not a number"),
    ("Input should be a valid list", "is not a list of shares such as 0.8, 0.95"),
    ("Input should be greater than or equal to 0", "must be 0 or more"),
    ("Input should be greater than 0", "must be more than 0"),
    ("Value error, ", ""),
]


def in_words(name: str, value: str, message: str) -> str:
    """A settings error as a sentence about the field, e.g. "Monthly budget ($): 'abc' is not a number"."""
    said = message.split(":", 1)[1].strip() if message.startswith("setting ") else message
    for phrase, words in PHRASES:
        said = said.replace(phrase, words)
    return f"{dict(BUDGET_FIELDS).get(name, name)}: {value!r} {said}" if said != message else message


def thresholds_problem(value: str) -> str | None:
    """The alert thresholds are shares typed as a list; say which part is not a number."""
    for part in (p.strip() for p in value.split(",")):
        try:
            float(part)
        except ValueError:
            return f"Alert thresholds: {part!r} is not a number (write shares of the budget, e.g. 0.8, 0.95)"
    return None


class CostsScreen(ReportsWorkerErrors, Screen[None]):
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
                yield NavTable(id="job-costs", cursor_type="row")
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

    @work(thread=True, exclusive=True, exit_on_error=False)
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
            spent = [m["spent"] for m in months]
            plt.bar([m["month"] for m in months], spent, width=0.4)
            plt.ylim(0, max(spent) * 1.15 or 1.0)  # from $0: plotext spreads all-zero or one bar over -1..1
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

    @work(thread=True, exclusive=True, exit_on_error=False)
    def save(self, values: dict[str, str]) -> None:
        backend = self.lorapod.backend
        problem = thresholds_problem(values["alert_thresholds"])
        try:
            for name, value in values.items():
                current = getattr(backend.settings, name)
                shown = ", ".join(str(v) for v in current) if isinstance(current, list) else str(current)
                if value != shown and not (problem and name == "alert_thresholds"):
                    backend.save_setting(name, f"[{value}]" if name == "alert_thresholds" else value)
        except SettingsError as exc:
            problem = in_words(name, value, str(exc))
        if problem is not None:
            self.app.call_from_thread(self.query_one("#budget-problem", Static).update, problem)
            return
        self.app.call_from_thread(self.query_one("#budget-problem", Static).update, "")
        self.app.call_from_thread(self.notify, "budget settings saved to config.toml", title="Budget")
        self.app.call_from_thread(self.load)

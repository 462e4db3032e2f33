"""The new-job wizard: dataset → preset → resources → review → start. Dismisses with a JobSpec (or None).

Each step checks what it can: the dataset's errors block, a bad hyperparameter is named with its allowed
range, and the review shows the estimate, the budget impact and every warning before anything starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import (
    Button,
    Collapsible,
    ContentSwitcher,
    DirectoryTree,
    Input,
    Label,
    RadioSet,
    Select,
    Static,
)

import presets as preset_files
from engine import LorapodError, SpecError
from engine.config import CloudType, Hyperparameters, JobSpec, Provider, allowed_range, diff
from presets.gpus import catalogue
from tui.dialogs.wizard_views import DatasetTree, dataset_report, launch_text, review_view
from tui.errors import ReportsWorkerErrors
from tui.widgets.choices import Choice

if TYPE_CHECKING:
    from tui.app import LorapodApp
    from tui.backend import DatasetInspection

STEPS = ["dataset", "preset", "resources", "review"]
STEP_TITLES = {"dataset": "1 Dataset", "preset": "2 Preset", "resources": "3 Resources", "review": "4 Review"}


class NewJobWizard(ReportsWorkerErrors, ModalScreen[JobSpec | None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="wizard.close", tooltip="Close the wizard; nothing starts"),
        Binding("ctrl+n", "next", "Next", id="wizard.next", tooltip="The next step (on Review: start the job)"),
        Binding("ctrl+b", "back", "Back", id="wizard.back", tooltip="The previous step"),
        Binding("ctrl+s", "start", "Start", id="wizard.start", tooltip="Start the job as reviewed (on Review)"),
    ]

    def __init__(self, dataset: Path | None = None, *, root: Path | None = None) -> None:
        super().__init__()
        self.root = root or Path.cwd()
        self.step = 0
        self.dataset_path: Path | None = dataset
        self.inspection: DatasetInspection | None = None
        self.preset_name = preset_files.default_name()
        self.spec: JobSpec | None = None
        self.inspected_under = ""  # the preset (and changes) the dataset's statistics were measured under
        self.local: str | None = None  # a local run's estimate, in words

    @property
    def lorapod(self) -> LorapodApp:
        return self.app  # type: ignore[return-value]

    # --- layout ---------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical(id="wizard", classes="dialog huge"):
            yield Static(id="wizard-steps")
            with ContentSwitcher(initial="dataset", id="wizard-body"):
                with Vertical(id="dataset"):
                    with Horizontal(classes="row"):
                        yield Input(
                            str(self.dataset_path or ""),
                            placeholder="path to a .json or .jsonl dataset",
                            id="dataset-path",
                        )
                        yield Button("Check", id="check")
                    with Horizontal(id="dataset-panes"):
                        yield DatasetTree(self.root, id="tree")
                        with VerticalScroll(id="dataset-report-scroll"):
                            yield Static("Choose a file: type its path or pick it in the tree.", id="dataset-report")
                with VerticalScroll(id="preset"):
                    with RadioSet(id="presets"):
                        for name, preset in preset_files.all_presets().items():
                            yield Choice(
                                f"{name} — {preset.description}", value=name == self.preset_name, id=f"preset-{name}"
                            )
                    with Collapsible(title="Advanced: every hyperparameter", id="advanced"):
                        for field in Hyperparameters.model_fields:
                            with Horizontal(classes="field-row"):
                                yield Label(field, classes="field-name")
                                yield Input(
                                    id=f"hp-{field}", classes="field-input", tooltip=allowed_range(field), compact=True
                                )
                    yield Static(id="preset-diff")
                with VerticalScroll(id="resources"):
                    yield Label("Job name (optional)")
                    yield Input(id="job-name", placeholder="e.g. 18-conversation proof")
                    yield Label("Provider")
                    yield Select(
                        [(p.value, p.value) for p in Provider], value="local", allow_blank=False, id="provider"
                    )
                    yield Label("GPU types, in priority order (comma-separated)")
                    yield Input(id="gpu-types")
                    yield Static(self._gpu_catalogue(), classes="dim")
                    with Horizontal(classes="row"):
                        with Vertical():
                            yield Label("Cloud")
                            yield Select(
                                [(c.value, c.value) for c in CloudType], value="SECURE", allow_blank=False, id="cloud"
                            )
                        with Vertical():
                            yield Label("GPU count")
                            yield Input("1", id="gpu-count")
                        with Vertical():
                            yield Label("Max hours")
                            yield Input(id="max-hours", placeholder="settings")
                        with Vertical():
                            yield Label("Max cost ($)")
                            yield Input(id="max-cost", placeholder="settings")
                with VerticalScroll(id="review"):
                    yield Static(id="review-text")
            yield Static(id="wizard-problem", classes="error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Back (ctrl+b)", id="back")
                yield Button("Next (ctrl+n)", variant="primary", id="next")
                yield Button("Start (ctrl+s)", variant="success", id="start")
                yield Button("Close", id="close")

    def _gpu_catalogue(self) -> Text:
        cat = catalogue()
        lines = [
            f"{g.id}  —  {g.label}, {g.memory_gb:g} GB, ${g.secure:.2f}/h secure, ${g.community:.2f}/h community"
            for g in cat.gpu
        ]
        return Text("Known types (prices of " + cat.prices_as_of + "):\n" + "\n".join(lines))

    def on_mount(self) -> None:
        self._fill_preset(self.preset_name)
        self._show_step()
        if self.dataset_path is not None:
            self.check_dataset()

    def _show_step(self) -> None:
        name = STEPS[self.step]
        self.query_one(ContentSwitcher).current = name
        text = Text()
        for index, step in enumerate(STEPS):
            if index:
                text.append("  →  ", style="dim")
            style = "bold reverse" if index == self.step else "green" if index < self.step else "dim"
            text.append(("✔ " if index < self.step else "") + STEP_TITLES[step], style=style)
        self.query_one("#wizard-steps", Static).update(text)
        self.query_one("#back", Button).disabled = self.step == 0
        self.query_one("#next", Button).display = name != "review"
        self.query_one("#start", Button).display = name == "review"
        self.query_one("#wizard-problem", Static).update("")
        self.refresh_bindings()
        if name == "dataset":
            self.query_one("#dataset-path", Input).focus()
            if self.inspection is not None and self.inspected_under != self._under():
                self.check_dataset()  # the statistics depend on the preset chosen since
        elif name == "preset":
            self.query_one("#presets", RadioSet).focus()
        elif name == "resources":
            self.query_one("#job-name", Input).focus()
        elif name == "review":
            self.query_one("#start", Button).focus()
            self.build_review()

    # --- step 1: the dataset --------------------------------------------------------------------------

    @on(DirectoryTree.FileSelected)
    def _picked(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one("#dataset-path", Input).value = str(event.path)
        self.check_dataset()

    @on(Input.Submitted, "#dataset-path")
    @on(Button.Pressed, "#check")
    def _check(self) -> None:
        self.check_dataset()

    def check_dataset(self) -> None:
        raw = self.query_one("#dataset-path", Input).value.strip()
        if not raw:
            return
        path = Path(raw).expanduser()
        if not path.is_file():
            self.query_one("#dataset-report", Static).update(Text(f"{path}: no such file", style="red"))
            return
        self.dataset_path = path
        self.inspection = None
        self.query_one("#dataset-report", Static).update(Text(f"checking {path.name}…", style="dim"))
        self._inspect(path, self._current_spec(path) or self._preset_spec(path), self._under())

    def _under(self) -> str:
        """The preset as the form has it: its name, and how many values were changed."""
        changed = len(self._overrides())
        return f"preset {self.preset_name}" + (f" with {changed} change(s)" if changed else "")

    @work(thread=True, exclusive=True, group="inspect", exit_on_error=False)
    def _inspect(self, path: Path, spec: JobSpec, under: str) -> None:
        try:
            inspection = self.lorapod.backend.inspect_dataset(path, spec)
        except (LorapodError, OSError) as exc:  # an unreadable or invalid file: said beside it
            self.app.call_from_thread(self.query_one("#dataset-report", Static).update, Text(str(exc), style="red"))
            return
        self.app.call_from_thread(self._inspected, inspection, under)

    def _inspected(self, inspection: DatasetInspection, under: str) -> None:
        self.inspection, self.inspected_under = inspection, under
        self.query_one("#dataset-report", Static).update(dataset_report(inspection, under))

    # --- step 2: the preset ---------------------------------------------------------------------------

    @on(RadioSet.Changed, "#presets")
    def _preset_changed(self, event: RadioSet.Changed) -> None:
        button_id = event.pressed.id or ""
        self.preset_name = button_id.removeprefix("preset-")
        self._fill_preset(self.preset_name)

    def _fill_preset(self, name: str) -> None:
        preset = preset_files.get(name)
        values = preset.hyperparameters.model_dump(mode="json")
        for field, value in values.items():
            text = ", ".join(value) if isinstance(value, list) else str(value)
            self.query_one(f"#hp-{field}", Input).value = text
        resources = preset.resources
        self.query_one("#provider", Select).value = resources.provider.value
        self.query_one("#gpu-types", Input).value = ", ".join(resources.gpu_types)
        self.query_one("#cloud", Select).value = resources.cloud_type.value
        self.query_one("#gpu-count", Input).value = str(resources.gpu_count)
        self._show_diff()

    @on(Input.Changed, ".field-input")
    def _hp_changed(self) -> None:
        self._show_diff()

    def _overrides(self) -> list[str]:
        preset = preset_files.get(self.preset_name)
        base = preset.hyperparameters.model_dump(mode="json")
        overrides = []
        for field, value in base.items():
            typed = self.query_one(f"#hp-{field}", Input).value.strip()
            shown = ", ".join(value) if isinstance(value, list) else str(value)
            if typed != shown:
                overrides.append(f"{field}={typed}")
        return overrides

    def _resource_overrides(self) -> list[str]:
        values = [
            f"provider={self.query_one('#provider', Select).value}",
            f"gpu_types={self.query_one('#gpu-types', Input).value}",
            f"cloud_type={self.query_one('#cloud', Select).value}",
            f"gpu_count={self.query_one('#gpu-count', Input).value.strip()}",
            f"max_hours={self.query_one('#max-hours', Input).value.strip() or 'none'}",
            f"max_cost_usd={self.query_one('#max-cost', Input).value.strip() or 'none'}",
        ]
        return values

    def _preset_spec(self, path: Path) -> JobSpec:
        return preset_files.get(self.preset_name).to_spec(str(path))

    def _current_spec(self, path: Path | None, *, resources: bool = False) -> JobSpec | None:
        """The spec the form describes, or None (with the problem shown) when a value is refused."""
        try:
            overrides = self._overrides() + (self._resource_overrides() if resources else [])
            spec = preset_files.get(self.preset_name).to_spec(str(path or "<dataset>"), overrides)
        except SpecError as exc:
            self.query_one("#wizard-problem", Static).update(str(exc))
            return None
        name = self.query_one("#job-name", Input).value.strip() or None
        self.query_one("#wizard-problem", Static).update("")
        return spec.model_copy(update={"name": name})

    def _show_diff(self) -> None:
        spec = self._current_spec(self.dataset_path)
        target = self.query_one("#preset-diff", Static)
        if spec is None:
            target.update("")
            return
        changes = [
            c for c in diff(self._preset_spec(self.dataset_path or Path("<dataset>")), spec) if c.field not in ("name",)
        ]
        if not changes:
            target.update(Text(f"{self.preset_name}: the preset's values", style="dim"))
            return
        table = Table(title=f"Changed from {self.preset_name}", title_justify="left")
        table.add_column("field")
        table.add_column(self.preset_name)
        table.add_column("this job")
        for change in changes:
            table.add_row(change.field, str(change.before), str(change.after))
        target.update(table)

    # --- step 4: review -------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="review", exit_on_error=False)
    def build_review(self) -> None:
        spec = self.spec
        inspection = self.inspection
        if spec is None or inspection is None:
            return
        backend = self.lorapod.backend
        if self.dataset_path is not None:  # measured again under the chosen preset and sequence length
            inspection = backend.inspect_dataset(self.dataset_path, spec)
        tokens = int(inspection.report.get("tokens") or 0)
        try:
            estimate = backend.estimate(spec, tokens)
        except LorapodError as exc:  # no estimate (unknown GPU, model size): say why, let the user decide
            estimate, problem = None, str(exc)
        else:
            problem = ""
        self.local = backend.local_estimate(spec, tokens) if spec.resources.provider is Provider.LOCAL else None
        from store.budget import may_start

        month = backend.month()
        high = estimate.cost[1] if estimate else 0.0
        decision = may_start(backend.settings, month, high)
        launch = backend.launch_plan(spec)  # RunPod: the pod it would rent, and what refuses it
        self.app.call_from_thread(self._review, spec, inspection, estimate, problem, month, decision, launch)

    def _review(
        self, spec: JobSpec, inspection: Any, estimate: Any, problem: str, month: Any, decision: Any, launch: Any
    ) -> None:
        settings = self.lorapod.backend.settings
        budget = settings.monthly_budget_usd
        view = review_view(spec, inspection, estimate, problem, month, decision, budget, self.local)
        # RunPod: the pod it would rent (lorapod run --plan), and what would refuse it before it bills.
        self.query_one("#review-text", Static).update(Group(view, launch_text(launch)) if launch else view)
        self.query_one("#start", Button).disabled = not decision.allowed or bool(launch and launch.get("problems"))
        self.refresh_bindings()

    # --- navigation -----------------------------------------------------------------------------------

    def _can_leave(self) -> bool:
        name = STEPS[self.step]
        problem = self.query_one("#wizard-problem", Static)
        if name == "dataset":
            if self.inspection is None:
                problem.update("choose a dataset file and wait for its check")
                return False
            if not self.inspection.report.get("ok"):
                problem.update("the dataset has errors: they block training (see the report)")
                return False
        if name in ("preset", "resources"):
            spec = self._current_spec(self.dataset_path, resources=name == "resources")
            if spec is None:
                return False
            self.spec = spec
        return True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":  # shown on Review only; dimmed while the review is refused or not ready
            return None if STEPS[self.step] != "review" else not self.query_one("#start", Button).disabled
        return True

    def action_start(self) -> None:
        if STEPS[self.step] == "review" and not self.query_one("#start", Button).disabled:
            self._start()

    @on(Button.Pressed, "#next")
    def action_next(self) -> None:
        if STEPS[self.step] == "review":
            self.action_start()
            return
        if self.step < len(STEPS) - 1 and self._can_leave():
            if STEPS[self.step] == "preset":
                self.spec = self._current_spec(self.dataset_path)
            self.step += 1
            self._show_step()

    @on(Button.Pressed, "#back")
    def action_back(self) -> None:
        if self.step > 0:
            self.step -= 1
            self._show_step()

    @on(Button.Pressed, "#start")
    def _start(self) -> None:
        spec = self._current_spec(self.dataset_path, resources=True)
        if spec is not None:
            self.dismiss(spec)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)

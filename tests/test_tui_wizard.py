"""The new-job wizard: started from Review by a key, statistics under the chosen preset, a local run's
estimate, and an Advanced panel that fits a small terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Collapsible, Input

from engine.config import JobSpec
from store.db import Ledger
from store.settings import load_settings
from tests.conftest import ROOT
from tests.test_tui import settle, text_of
from tests.tui_fixtures import NOW, populate
from tui.app import LorapodApp
from tui.backend import Backend
from tui.dialogs.wizard import NewJobWizard

pytestmark = pytest.mark.anyio
SAMPLE = ROOT / "samples" / "brightrun-sample.json"


@pytest.fixture
def backend(lorapod_home: Path) -> Backend:
    settings = load_settings()
    populate(Ledger(settings.paths.ledger))
    return Backend(settings, clock=lambda: NOW)


def shown(widget: Any) -> str:
    return text_of(widget)


def row(report: str, key: str) -> str:
    """A statistics row as "key value", spacing and borders dropped."""
    line = next((line for line in report.splitlines() if key in line), "")
    return " ".join(line.replace("│", " ").split())


async def until(pilot: Any, condition: Any, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        await pilot.pause(0.1)
    raise TimeoutError("the wizard never got there")


async def open_wizard(pilot: Any, chosen: list[Any]) -> NewJobWizard:
    await settle(pilot)
    wizard = NewJobWizard(SAMPLE, root=SAMPLE.parent)
    pilot.app.push_screen(wizard, chosen.append)
    await until(pilot, lambda: wizard.inspection is not None)
    return wizard


async def choose_preset(pilot: Any, wizard: NewJobWizard, name: str) -> None:
    wizard.query_one(f"#preset-{name}").value = True  # type: ignore[attr-defined]
    await pilot.pause(0.2)


async def to_review(pilot: Any, wizard: NewJobWizard) -> None:
    while wizard.step < 3:
        await pilot.press("ctrl+n")
        await pilot.pause(0.2)
    await until(pilot, lambda: "estimate" in shown(wizard.query_one("#review-text")))


@pytest.mark.parametrize("key", ["ctrl+n", "ctrl+s"])
async def test_a_key_on_review_starts_the_job(backend: Backend, key: str) -> None:
    chosen: list[Any] = []
    async with LorapodApp(backend, follow=False).run_test(size=(120, 40)) as pilot:
        wizard = await open_wizard(pilot, chosen)
        await pilot.press("ctrl+s")  # not on Review: nothing starts
        await pilot.pause(0.2)
        assert not chosen and wizard.step == 0
        await pilot.press("ctrl+n")
        await pilot.pause(0.2)
        await choose_preset(pilot, wizard, "smoke")
        await to_review(pilot, wizard)
        await pilot.press(key)
        await until(pilot, lambda: bool(chosen), timeout=5)  # workers never finish while the tree is open
        assert len(chosen) == 1 and isinstance(chosen[0], JobSpec) and chosen[0].preset == "smoke"


async def test_the_dataset_statistics_follow_the_chosen_preset(backend: Backend) -> None:
    chosen: list[Any] = []
    async with LorapodApp(backend, follow=False).run_test(size=(120, 40)) as pilot:
        wizard = await open_wizard(pilot, chosen)
        assert row(shown(wizard.query_one("#dataset-report")), "measured under") == "measured under preset balanced"
        await pilot.press("ctrl+n")
        await pilot.pause(0.2)
        await choose_preset(pilot, wizard, "smoke")
        await pilot.press("ctrl+b")
        await until(pilot, lambda: "preset smoke" in row(shown(wizard.query_one("#dataset-report")), "measured"))
        spec = wizard._preset_spec(SAMPLE)
        expected = backend.inspect_dataset(SAMPLE, spec).stats
        assert expected is not None and wizard.inspection is not None
        assert wizard.inspection.stats == expected
        report = shown(wizard.query_one("#dataset-report"))
        assert row(report, "steps per epoch") == f"steps per epoch {expected['steps_per_epoch']:,}"


async def test_a_local_run_gets_an_estimate(backend: Backend) -> None:
    chosen: list[Any] = []
    async with LorapodApp(backend, follow=False).run_test(size=(120, 40)) as pilot:
        wizard = await open_wizard(pilot, chosen)
        await pilot.press("ctrl+n")
        await pilot.pause(0.2)
        await choose_preset(pilot, wizard, "smoke")
        await to_review(pilot, wizard)
        review = shown(wizard.query_one("#review-text"))
        # The ledger holds one finished local run of the demo model, at about 612 tokens/s.
        assert "of training at 61" in review and "tokens/s" in review and "notional" in review


async def test_the_advanced_panel_fits_a_small_terminal(backend: Backend) -> None:
    chosen: list[Any] = []
    async with LorapodApp(backend, follow=False).run_test(size=(80, 24)) as pilot:
        wizard = await open_wizard(pilot, chosen)
        await pilot.press("ctrl+n")
        await pilot.pause(0.2)
        wizard.query_one("#advanced", Collapsible).collapsed = False
        await pilot.pause(0.3)
        screen_height = pilot.app.size.height
        fields = [field for field in wizard.query(Input) if (field.id or "").startswith("hp-")]
        visible = [f for f in fields if f.region.height and f.region.y + f.region.height <= screen_height]
        assert len(visible) >= 6, len(visible)

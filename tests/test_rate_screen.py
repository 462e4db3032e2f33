"""The Rate screen through Textual's Pilot: a job rated blind, the adapter's reply revealed only after rating."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.db import Ledger
from store.ratings import adapter_label, human_summary, ratings
from store.settings import load_settings
from tests.test_rating import rated_job
from tests.test_tui import SIZE, settle, text_of
from tui.app import LorapodApp
from tui.backend import Backend
from tui.screens.monitor import MonitorScreen
from tui.screens.rate import RateScreen

pytestmark = pytest.mark.anyio


async def test_a_job_is_rated_blind_and_revealed_only_after_each_rating(lorapod_home: Path) -> None:
    settings = load_settings()
    ledger = Ledger(settings.paths.ledger)
    job = rated_job(ledger)
    app = LorapodApp(Backend(settings), follow=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_job(str(job.id))
        await settle(pilot, 0.6)
        assert isinstance(app.screen, MonitorScreen)
        await pilot.press("v")  # the monitor's Rate key
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RateScreen)
        rater = screen.rater

        def shown(widget: str) -> str:
            return text_of(screen.query_one(widget)).strip()

        # Prompt 1: two replies labelled A and B, nothing saying whose.
        label = adapter_label(job.id, 0, rater)
        assert "Question 0" in shown("#rate-prompt")
        assert shown("#rate-label-a") == "A" and shown("#rate-label-b") == "B"
        assert shown(f"#rate-reply-{label.lower()}") == "adapter reply 0"
        assert shown(f"#rate-reply-{'b' if label == 'A' else 'a'}") == "base reply 0"
        # Rate the base's reply better; only now do the labels say whose reply was whose.
        await pilot.press("b" if label == "A" else "a")
        await settle(pilot)
        assert shown(f"#rate-label-{label.lower()}") == f"{label} — the adapter's reply"
        assert "you preferred the base" in shown("#rate-status")
        await pilot.press("a")  # a second key before moving on changes nothing
        await settle(pilot)
        assert [(r.prompt_index, r.choice, r.adapter_label) for r in ratings(ledger, job.id)] == [(0, "base", label)]

        await pilot.press("n")
        await settle(pilot)
        assert "Question 1" in shown("#rate-prompt") and shown("#rate-label-a") == "A"
        await pilot.press("s")  # skipped: nothing recorded, the next prompt
        await settle(pilot)
        assert "Question 2" in shown("#rate-prompt")
        label = adapter_label(job.id, 2, rater)
        await pilot.press(label.lower())
        await settle(pilot)
        await pilot.press("n", "t")
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert "nothing left" in shown("#rate-heading")

    summary = human_summary(ledger, job.id)
    assert summary is not None
    assert (summary["adapter_wins"], summary["base_wins"], summary["ties"], summary["ratings"]) == (1, 1, 1, 3)
    ledger.close()

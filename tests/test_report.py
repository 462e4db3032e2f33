"""The client report: rendered for a real smoke job, opened in headless Chromium, compared, and its quality
sections against their targets."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from engine.targets import check_targets
from store.db import Ledger
from store.jobs import get_job
from store.report import render
from store.report.data import JobReport, gather
from tests.conftest import ROOT, DemoJob, run_lorapod

pytestmark = pytest.mark.slow
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots for a person to look at (ignored by git)
CHROMIUM = Path("/usr/bin/chromium")
# Nothing of the browser's own reaches out while the page is shown: only the page's requests are seen.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(scope="module")
def demo_report(demo_job: DemoJob) -> Iterator[JobReport]:
    ledger = Ledger(demo_job.home / "ledger.sqlite")
    yield gather(ledger, get_job(ledger, demo_job.job_id))
    ledger.close()


def _chromium() -> Any:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run this test: /usr/bin/chromium is missing (tests/ensure-services.sh installs it)")
        pytest.skip("Chromium is not installed here (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


class _Text(HTMLParser):
    """The page's visible text, whitespace collapsed (what a reader sees, not the markup)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("style", "svg")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "svg")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)

    @classmethod
    def of(cls, html: str) -> str:
        parser = cls()
        parser.feed(html)
        return re.sub(r"\s+", " ", " ".join(parser.parts))


def test_the_smoke_jobs_report_renders_in_chromium_with_nothing_fetched(demo_job: DemoJob, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    result = run_lorapod("report", demo_job.job_id[:8], "-o", str(target), "--json", env=demo_job.env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == str(target)
    html = target.read_text(encoding="utf-8")
    assert len(html.encode()) <= 2_000_000
    # Self-contained: no script, no external stylesheet, image or font; charts are inline SVG.
    assert "<script" not in html and "<link" not in html and "<img" not in html and "@import" not in html
    assert "url(" not in html.split("</style>")[0]
    assert html.count("<svg") >= 3

    ARTIFACTS.mkdir(exist_ok=True)
    with _chromium() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        console: list[str] = []
        requests: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(target.as_uri(), wait_until="networkidle")
        page.screenshot(path=str(ARTIFACTS / "report-smoke.png"), full_page=True)
        pdf = page.pdf(path=str(ARTIFACTS / "report-smoke.pdf"), format="A4", print_background=True)
        visible = page.inner_text("body")
        chart_sizes = page.eval_on_selector_all(
            "figure.chart svg", "els => els.map(e => e.getBoundingClientRect().width)"
        )
        browser.close()
    assert [c for c in console if c.startswith(("error", "pageerror", "warning"))] == []
    assert requests == [target.as_uri()]  # the page itself, and nothing else
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 2  # printed: several A4 pages
    assert len(chart_sizes) >= 3 and all(width > 300 for width in chart_sizes)

    details = json.loads(run_lorapod("show", demo_job.job_id, "--json", env=demo_job.env).stdout)
    for heading in ("What it was trained on", "How it was trained", "Training curves", "Perplexity",
                    "Quality against the targets", "Replies side by side", "Packages and checksums"):  # fmt: skip
        assert heading in visible
    assert details["dataset"]["dataset_sha256"] in visible
    for artifact in details["artifacts"]:
        assert artifact["sha256"] in visible
    assert f"{details['evaluation']['adapter_perplexity']:.4g}" in visible
    assert "LLM judge" in visible and "not measured" in visible  # no judge ran on the smoke job


def test_several_jobs_make_a_comparison_with_their_differences_marked(demo_report: JobReport) -> None:
    other = replace(
        demo_report,
        job=demo_report.job.model_copy(update={"name": "rank-16"}),
        hyperparameters={**demo_report.hyperparameters, "lora_r": 16},
        evaluation={**demo_report.evaluation, "adapter_perplexity": 3.5},
    )
    html = render([demo_report, other], generated_at=datetime(2026, 1, 2, tzinfo=UTC))
    text = _Text.of(html)
    assert "Fine-tuning comparison · 2 adapters" in text
    assert text.count("demo (") >= 3 and text.count("rank-16 (") >= 3
    assert re.search(r'<tr class="differs"><th>lora r</th><td>8</td><td>16</td>', html)
    assert '<tr class="differs"><th>lora alpha</th>' not in html  # the same in both: not marked
    assert "3.5" in text
    assert html.count('aria-label="loss"') == 1  # one chart holds both jobs' curves


def test_judge_human_and_retention_render_against_their_targets(demo_report: JobReport) -> None:
    evaluation = {
        **demo_report.evaluation,
        "base_perplexity": 10.0,
        "adapter_perplexity": 5.8,
        "judge": {
            "judge_model": "demo:tiny-llama",
            "win_rate": 0.625, "ci95": [0.41, 0.8], "wins": 10, "ties": 2, "losses": 4, "unparsed": 1,
            "by_criterion": {
                "clarity": {"win_rate": 0.7, "wins": 7, "ties": 1, "losses": 2},
                "persona_consistency": {"win_rate": 0.6, "wins": 6, "ties": 0, "losses": 4},
            },
        },
        "retention": {"retained": 0.97, "tasks": {"finance_qa": {"base": 0.5, "adapter": 0.485}}},
        "best_checkpoint": {"step": 21, "eval_loss": 2.31},
    }  # fmt: skip
    # The targets as the engine checks them: perplexity and retention pass, persona fails, no human ratings.
    evaluation["targets"] = check_targets(evaluation)
    text = _Text.of(render([replace(demo_report, evaluation=evaluation)]))
    quality = text[text.index("5. Quality against the targets") : text.index("6. Replies side by side")]
    assert quality.count("✔ pass") == 2 and quality.count("✘ fail") == 1
    assert "human preference — not measured" in quality  # a target not measured says so
    assert "win rate 62.5%" in quality and "ci95 41.0% – 80.0%" in quality and "unparsed 1" in quality
    assert "clarity 70.0%" in quality  # per criterion, as a table row
    assert "Blind human rating — not measured" in quality
    assert "retained 97.0%" in quality
    assert "checkpoint at step 21" in quality


@pytest.mark.anyio
async def test_p_in_the_jobs_table_writes_the_report_in_a_worker_and_a_toast_gives_its_path(
    demo_job: DemoJob, lorapod_home: Path
) -> None:
    from store.settings import load_settings
    from tui.app import LorapodApp
    from tui.backend import Backend

    lorapod_home.mkdir(parents=True, exist_ok=True)
    for part in demo_job.home.glob("ledger.sqlite*"):  # the job's ledger; its workdir stays where it is, read only
        shutil.copy(part, lorapod_home / part.name)
    app = LorapodApp(Backend(load_settings()))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
        await pilot.press("o")
        for _ in range(240):
            written = [n for n in app._notifications if n.title == "Report written"]
            if written:
                break
            await pilot.pause(0.25)
    (report,) = (lorapod_home / "reports").glob("report-*.html")
    assert report.name == f"report-{demo_job.job_id[:8]}.html"
    assert written and str(report) in written[0].message
    assert demo_job.job_id in report.read_text(encoding="utf-8")


def test_a_report_of_an_unknown_job_or_to_an_unwritable_place_says_so(demo_job: DemoJob, tmp_path: Path) -> None:
    missing = run_lorapod("report", "ffffffff", env=demo_job.env)
    assert missing.returncode == 1 and "ffffffff" in missing.stderr and "Traceback" not in missing.stderr
    blocked = tmp_path / "file"
    blocked.write_text("")
    unwritable = run_lorapod("report", demo_job.job_id, "-o", str(blocked / "report.html"), env=demo_job.env)
    assert unwritable.returncode == 1 and "cannot write the report" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr


def test_a_change_reads_as_the_targets_do_rounded_toward_zero() -> None:
    from store.report import change

    assert change(15.49, 15.49 * (1 - 0.2996)) == "-29.9%"  # a drop just short of 30% never reads as 30.0%
    assert change(10.0, 10.5) == "5.0%"
    assert change(0.0, 1.0) == change(None, 1.0) == change(2.0, None) == "—"

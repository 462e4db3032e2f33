"""The owner's four targets: checked from an evaluation (pass, fail or not measured, with the numbers), and listed
by ``lorapod show`` and ``lorapod compare``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import presets
from engine.targets import check_targets
from store.db import Ledger
from store.events import EventRecord, record_events
from store.jobs import create_job, short_id, transition
from store.status import JobStatus
from tests.conftest import run_cli

MEASURED: dict[str, Any] = {
    "base_perplexity": 10.0,
    "adapter_perplexity": 6.5,
    "best_checkpoint": {"step": 40, "eval_loss": 1.8718},
    "judge": {
        "win_rate": 0.7,
        "ci95": [0.6, 0.8],
        "wins": 14, "ties": 2, "losses": 4, "unparsed": 0,
        "by_criterion": {"persona_consistency": {"wins": 15, "ties": 2, "losses": 3}},
        "by_group": {},
    },
    "retention": {"retained": 0.93, "base_score": 0.5, "adapter_score": 0.465},
}  # fmt: skip


def test_each_target_passes_or_fails_with_its_numbers() -> None:
    targets = check_targets(MEASURED, human={"wins": 22, "ties": 5, "losses": 20})
    assert [t for t in targets] == ["perplexity", "human", "retention", "persona"]
    assert targets["perplexity"]["status"] == "pass" and targets["perplexity"]["reduction"] == 0.35
    assert targets["human"]["status"] == "fail" and round(targets["human"]["preference"], 4) == 0.1
    assert targets["retention"]["status"] == "fail" and targets["retention"]["retained"] == 0.93
    assert targets["persona"]["status"] == "pass" and targets["persona"]["match_rate"] == 0.85
    assert targets["persona"]["cases"] == 20
    # The thresholds are inclusive, and a result just below one fails.
    assert check_targets({"base_perplexity": 10.0, "adapter_perplexity": 7.0})["perplexity"]["status"] == "pass"
    assert check_targets({"base_perplexity": 10.0, "adapter_perplexity": 7.01})["perplexity"]["status"] == "fail"
    assert check_targets({}, human={"wins": 23, "ties": 0, "losses": 20})["human"]["status"] == "pass"
    assert check_targets({}, human={"win_rate": 0.6})["human"]["status"] == "pass"  # 0.6 ÷ 0.4: 1.5×
    assert check_targets({"retention": {"retained": 0.95}})["retention"]["status"] == "pass"
    # Just short of a target never reads as on it: 15.49 → 10.85 is 29.96% below, shown as 29.9%, not 30.0%.
    short = check_targets({"base_perplexity": 15.49, "adapter_perplexity": 10.85})["perplexity"]
    assert short["status"] == "fail" and short["summary"].startswith("29.9% below the base")


def test_an_absent_input_is_not_measured() -> None:
    targets = check_targets({"examples": 0, "skipped": "no held-out split"})
    assert {t["status"] for t in targets.values()} == {"not measured"}
    assert targets["human"]["summary"] == "no human ratings"
    unrated = check_targets(MEASURED, human={"wins": 0, "ties": 3, "losses": 0})
    assert unrated["human"]["status"] == "not measured"
    judge_without_persona = {**MEASURED, "judge": {**MEASURED["judge"], "by_criterion": {"clarity": {"wins": 1}}}}
    assert check_targets(judge_without_persona)["persona"]["status"] == "not measured"


def _job_with_evaluation(ledger: Ledger, name: str, evaluation: dict[str, Any] | None) -> str:
    job = create_job(ledger, presets.get("smoke").to_spec("d.json"), name=name)
    transition(ledger, job.id, JobStatus.TRAINING)
    transition(ledger, job.id, JobStatus.COMPLETED)
    if evaluation is not None:
        payload = {"v": 1, "tokens": 100, "eval_loss": 1.87, **evaluation}
        record_events(ledger, job.id, [EventRecord(1, "eval", datetime.now(UTC), payload)])
    return short_id(job.id)


def test_show_lists_the_four_targets(ledger: Ledger) -> None:
    job = _job_with_evaluation(ledger, "measured", MEASURED)
    result = run_cli("show", job)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, status in [
        ("perplexity", "✓ pass"), ("human preference", "– not measured"), ("knowledge retention", "✗ fail"),
        ("persona voice", "✓ pass"),
    ]:  # fmt: skip
        assert any(name in line and status in line for line in lines), (name, result.output)
    assert "checkpoint-40" in result.output  # the packaged checkpoint is named
    shown = json.loads(run_cli("show", job, "--json").stdout)
    assert shown["targets"]["retention"]["retained"] == 0.93
    assert shown["evaluation"]["best_checkpoint"] == {"step": 40, "eval_loss": 1.8718}


def test_a_job_never_evaluated_lists_every_target_as_not_measured(ledger: Ledger) -> None:
    job = _job_with_evaluation(ledger, "never evaluated", None)
    result = run_cli("show", job)
    assert result.exit_code == 0, result.output
    assert result.output.count("not measured") == 4


def test_compare_shows_each_jobs_targets(ledger: Ledger) -> None:
    good = _job_with_evaluation(ledger, "good", MEASURED)
    weak = _job_with_evaluation(ledger, "weak", {"base_perplexity": 10.0, "adapter_perplexity": 9.0})
    result = run_cli("compare", good, weak)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "target: perplexity" in line)
    assert row.index("✓ pass") < row.index("✗ fail")
    compared = json.loads(run_cli("compare", good, weak, "--json").stdout)
    assert [j["targets"]["perplexity"]["status"] for j in compared["jobs"]] == ["pass", "fail"]

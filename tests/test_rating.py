"""Blind human rating (`lorapod rate`, the ledger's ratings) and the endpoint judge from the CLI (`lorapod judge`)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import presets
from store.db import Ledger
from store.events import record_events
from store.jobs import create_job, update_job
from store.ratings import adapter_label, human_summary, record_rating
from tests.conftest import run_cli
from tests.standins.openai_judge import JudgeStandIn
from tests.test_judge import scripted

REPLIES = [
    {
        "prompt": [
            {"role": "system", "content": "You are Elena, a warm financial advisor."},
            {"role": "user", "content": f"Question {i}: I am scared about my debt."},
        ],
        "reference": "…",
        "base": f"base reply {i}",
        "adapter": f"adapter reply {i}",
        "meta": {"persona": "anxious"},
    }
    for i in range(4)
]


def rated_job(ledger: Ledger, replies: list[dict[str, Any]] = REPLIES, **overrides: str) -> Any:
    spec = presets.get("smoke").to_spec("d.json", [f"{k}={v}" for k, v in overrides.items()])
    job = create_job(ledger, spec, name="rated")
    event = {"seq": 1, "ts": "2026-11-22T10:00:00+00:00", "type": "eval", "base_perplexity": 9.0,
             "adapter_perplexity": 7.0, "eval_loss": 1.9, "tokens": 100, "replies": replies}  # fmt: skip
    record_events(ledger, job.id, [event])
    return job


def keys_for(job_id: uuid.UUID, rater: str, wanted: list[str]) -> str:
    """The keys a rater presses to give ``wanted`` (adapter/base/tie/skip) to prompts 0, 1, … in turn."""
    keys = []
    for index, choice in enumerate(wanted):
        label = adapter_label(job_id, index, rater)
        other = "B" if label == "A" else "A"
        keys.append({"adapter": label, "base": other, "tie": "t", "skip": "s"}[choice].lower())
    return "\n".join(keys) + "\n"


def test_rating_blind_records_the_reply_chosen_and_reveals_it_after(ledger: Ledger, tmp_path: Path) -> None:
    job = rated_job(ledger)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "eval.json").write_text(json.dumps({"base_perplexity": 9.0}))
    update_job(ledger, job.id, workdir=str(workdir))
    from click.testing import CliRunner

    from tui.cli import cli

    keys = keys_for(job.id, "ana", ["adapter", "base", "skip", "adapter"])
    result = CliRunner().invoke(cli, ["rate", str(job.id), "--rater", "ana"], input=keys, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    # Each reveal comes after the prompt's key, never before the replies are shown.
    first_reveal = out.index("recorded: adapter — the adapter's reply was")
    assert out.index("Question 0") < out.index("base reply 0") < first_reveal
    assert "adapter reply 0" in out[:first_reveal] and "skipped" in out
    summary = human_summary(ledger, job.id)
    assert summary is not None
    assert (summary["ratings"], summary["adapter_wins"], summary["base_wins"], summary["ties"]) == (3, 2, 1, 0)
    assert summary["win_rate"] == pytest.approx(2 / 3) and summary["raters"] == ["ana"]
    assert "win rate 67%" in out
    # A job that ran here keeps the tally in its eval.json too, beside what was there.
    evaluation = json.loads((workdir / "eval.json").read_text())
    assert evaluation["human"] == summary and evaluation["base_perplexity"] == 9.0


def test_the_order_is_random_per_prompt_but_the_same_for_a_rater() -> None:
    job_id = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
    labels = [adapter_label(job_id, i, "ana") for i in range(40)]
    assert {"A", "B"} == set(labels)
    assert labels == [adapter_label(job_id, i, "ana") for i in range(40)]


def test_several_raters_rate_the_same_job_and_a_second_rating_replaces_the_first(ledger: Ledger) -> None:
    job = rated_job(ledger)
    record_rating(ledger, job.id, 0, "ana", "adapter", "A")
    record_rating(ledger, job.id, 0, "ana", "tie", "A")  # ana changed her mind
    record_rating(ledger, job.id, 0, "ben", "base", "B")
    record_rating(ledger, job.id, 1, "ben", "adapter", "A")
    summary = human_summary(ledger, job.id)
    assert summary is not None
    assert (summary["ratings"], summary["adapter_wins"], summary["base_wins"], summary["ties"]) == (3, 1, 1, 1)
    assert summary["raters"] == ["ana", "ben"] and summary["target"] == 0.15
    # `show --json` carries the same summary.
    shown = json.loads(run_cli("show", str(job.id), "--json").stdout)
    assert shown["evaluation"]["human"] == summary
    # --summary rates nothing and reports every rater.
    again = run_cli("rate", str(job.id), "--rater", "ben", "--summary")
    assert "from 3 ratings by 2 rater(s)" in again.stdout


def test_a_job_without_replies_says_so(ledger: Ledger) -> None:
    job = rated_job(ledger, replies=[])
    result = run_cli_safe("rate", str(job.id), "--rater", "ana")
    assert result.exit_code == 1
    assert "no held-out replies to rate" in result.output


def run_cli_safe(*args: str) -> Any:
    from click.testing import CliRunner

    from tui.cli import cli

    return CliRunner().invoke(cli, list(args))


def test_lorapod_judge_calls_the_endpoint_from_this_machine(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = [{**REPLIES[0], "base": f"base reply {i}", "adapter": f"adapter reply {i}"} for i in range(10)]
    with JudgeStandIn(scripted, key="sk-local") as standin:
        job = rated_job(ledger, replies, judge="endpoint", judge_url=standin.url, judge_model="judge-model")
        workdir = tmp_path / "work"
        workdir.mkdir()
        (workdir / "eval.json").write_text(json.dumps({"base_perplexity": 9.0}))
        update_job(ledger, job.id, workdir=str(workdir))
        monkeypatch.setenv("JUDGE_API_KEY", "sk-local")
        result = run_cli("judge", str(job.id))
        assert result.exit_code == 0, result.output
        assert len(standin.requests) == 20
    evaluation = json.loads((workdir / "eval.json").read_text())
    assert evaluation["base_perplexity"] == 9.0  # the rest of eval.json stays
    judge = evaluation["judge"]
    assert (judge["wins"], judge["ties"], judge["losses"], judge["unparsed"]) == (6, 2, 1, 1)
    assert judge["judge"] == f"judge-model at {standin.url}" and len(judge["records"]) == 20
    assert "win rate 78% (95% CI 45%–94%)" in result.stdout
    assert "sk-local" not in result.output + json.dumps(judge)


def test_a_remote_jobs_judge_from_this_machine_reaches_show_and_its_persona_target(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A RunPod job: its eval.json stayed in its package, so no workdir here; the judge is kept beside the ledger.
    replies = [{**REPLIES[0], "base": f"base reply {i}", "adapter": f"adapter reply {i}"} for i in range(10)]
    with JudgeStandIn(scripted, key="sk-local") as standin:
        job = rated_job(ledger, replies, judge="endpoint", judge_url=standin.url, judge_model="judge-model")
        monkeypatch.setenv("JUDGE_API_KEY", "sk-local")
        result = run_cli("judge", str(job.id))
        assert result.exit_code == 0, result.output
    shown = json.loads(run_cli("show", str(job.id), "--json").stdout)
    judge = shown["evaluation"]["judge"]
    assert (judge["wins"], judge["ties"], judge["losses"], judge["unparsed"]) == (6, 2, 1, 1)
    assert "records" not in judge  # the raw verdicts stay in the kept file
    assert shown["targets"]["persona"]["status"] in {"pass", "fail"}
    assert "judge" in run_cli("show", str(job.id)).stdout

"""The pairwise judge: verdicts read or counted unreadable, both orders combined, tallies and Wilson intervals,
through a local OpenAI-compatible stand-in and through the demo model itself."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine.judge import OVERALL, combine, judge_pairs, parse_verdict
from engine.judge_endpoint import EndpointJudge, JudgeError
from engine.preference import Z95, Tally, wilson_interval
from presets.rubrics import RubricError, load_rubric
from tests.standins.openai_judge import JudgeStandIn

CRITERIA = load_rubric("default")
NAMES = [*CRITERIA, OVERALL]


def test_the_wilson_interval_is_the_textbook_one() -> None:
    # statsmodels' proportion_confint(7, 10, method="wilson") gives (0.396778, 0.892209).
    low, high = wilson_interval(7, 10) or (0, 0)
    assert low == pytest.approx(0.3967781474611)
    assert high == pytest.approx(0.8922087325937)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(5, 5) == (pytest.approx(5 / (5 + Z95**2)), 1.0)  # all successes: n / (n + z²)


def test_a_tie_counts_half_and_unparsed_verdicts_are_not_in_the_rate() -> None:
    tally = Tally()
    for outcome in ["win", "win", "tie", "loss", None]:
        tally.add(outcome)
    summary = tally.summary()
    assert (summary["wins"], summary["ties"], summary["losses"], summary["unparsed"]) == (2, 1, 1, 1)
    assert summary["win_rate"] == pytest.approx(2.5 / 4)


def test_verdicts_are_read_never_guessed() -> None:
    text = 'Sure. {"clarity": "b", "overall": "Tie", "persona_consistency": "adapter"} done'
    answers = parse_verdict(text, ["clarity", "overall", "persona_consistency", "emotional_attunement"])
    assert answers == {"clarity": "B", "overall": "tie", "persona_consistency": None, "emotional_attunement": None}
    assert parse_verdict("A is better", ["overall"]) == {"overall": None}


def test_a_preference_that_follows_the_position_is_a_tie() -> None:
    assert combine("B", "A") == "win"  # adapter chosen as B, then as A
    assert combine("A", "B") == "loss"
    assert combine("A", "A") == "tie"  # first position both times: position bias cancels
    assert combine("tie", "A") == "tie"
    assert combine(None, "A") is None


def _replies(text: str) -> tuple[str, str]:
    match = re.search(r"\[reply A\]\n(.*)\n\n\[reply B\]\n(.*)$", text, re.DOTALL)
    assert match, text
    return match.group(1), match.group(2)


def scripted(user: str) -> str:
    """Pairs 0–5: the adapter's reply wins every criterion but clarity (a tie); 6–7: always A (position bias);
    8: the base's reply wins all but clarity (a tie); 9: no verdict at all."""
    a, _b = _replies(user)
    index = int(a.rsplit(" ", 1)[1])
    if index == 9:
        return "I cannot decide between these."
    if index in (6, 7):
        return json.dumps(dict.fromkeys(NAMES, "A"))
    preferred = "adapter" if index < 6 else "base"
    choice = "A" if a.startswith(preferred) else "B"
    return "Verdict: " + json.dumps({**dict.fromkeys(NAMES, choice), "clarity": "tie"})


PAIRS = [
    {
        "prompt": [
            {"role": "system", "content": "You are Elena, a warm financial advisor."},
            {"role": "user", "content": f"I am scared about my debt ({i})."},
        ],
        "base": f"base reply {i}",
        "adapter": f"adapter reply {i}",
        "meta": {"persona": "anxious" if i % 2 == 0 else "calm", "topic": "debt"},
    }
    for i in range(10)
]


def test_an_endpoint_judge_scores_exactly_and_sees_both_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    with JudgeStandIn(scripted) as standin:
        monkeypatch.setenv("JUDGE_API_KEY", standin.key)
        judge = EndpointJudge(standin.url, "judge-model", api_key_env="JUDGE_API_KEY")
        result = judge_pairs(PAIRS, CRITERIA, judge, judge=judge.describe(), batch_size=3)
        judge.close()
    # Every pair was shown twice, once in each order.
    shown = [_replies(next(m["content"] for m in r["messages"] if m["role"] == "user")) for r in standin.requests]
    assert len(shown) == 20
    for i in range(10):
        assert (f"base reply {i}", f"adapter reply {i}") in shown
        assert (f"adapter reply {i}", f"base reply {i}") in shown
    assert {r["model"] for r in standin.requests} == {"judge-model"}
    assert all(r["temperature"] == 0 for r in standin.requests)
    # 6 wins, 2 ties (position bias), 1 loss, 1 unreadable: 7 of 9 counted comparisons, Wilson 95%.
    assert (result["wins"], result["ties"], result["losses"], result["unparsed"]) == (6, 2, 1, 1)
    assert result["win_rate"] == pytest.approx(7 / 9)
    assert result["ci95"] == [pytest.approx(0.452588969107), pytest.approx(0.936774892882)]
    clarity = result["by_criterion"]["clarity"]
    assert (clarity["wins"], clarity["ties"], clarity["losses"], clarity["unparsed"]) == (0, 9, 0, 1)
    assert clarity["win_rate"] == pytest.approx(0.5)
    assert result["by_criterion"]["emotional_attunement"]["win_rate"] == pytest.approx(7 / 9)
    anxious, calm = result["by_group"]["persona"]["anxious"], result["by_group"]["persona"]["calm"]
    assert (anxious["wins"], anxious["ties"], anxious["losses"], anxious["unparsed"]) == (3, 1, 1, 0)
    assert (calm["wins"], calm["ties"], calm["losses"], calm["unparsed"]) == (3, 1, 0, 1)
    assert result["by_group"]["topic"]["debt"]["win_rate"] == pytest.approx(7 / 9)
    # Prompts and raw verdicts are kept, the unreadable one word for word.
    assert len(result["records"]) == 20
    unread = [r for r in result["records"] if r["pair"] == 9]
    assert {r["raw"] for r in unread} == {"I cannot decide between these."}
    assert "You are Elena" in unread[0]["prompt"][1]["content"]
    assert result["note"] is None


def test_a_wrong_key_is_a_plain_error_that_never_shows_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with JudgeStandIn(scripted) as standin:
        monkeypatch.setenv("MY_JUDGE_KEY", "sk-wrong-secret")
        judge = EndpointJudge(standin.url, "judge-model", api_key_env="MY_JUDGE_KEY")
        with pytest.raises(JudgeError) as caught:
            judge_pairs(PAIRS[:1], CRITERIA, judge, judge="endpoint")
    assert "refused the key (HTTP 401)" in str(caught.value)
    assert "sk-wrong-secret" not in str(caught.value)
    with pytest.raises(JudgeError, match="not an http"):
        EndpointJudge("ftp://example", "m")


def test_rubrics_are_small_files_and_a_bad_one_says_what_is_wrong(tmp_path: Path) -> None:
    assert set(CRITERIA) == {
        "emotional_attunement", "validation_before_advice", "clarity", "financial_accuracy_and_safety",
        "persona_consistency",
    }  # fmt: skip
    bad = tmp_path / "bad.toml"
    bad.write_text('[criteria]\nclarity = ""\n')
    with pytest.raises(RubricError, match="clarity: each needs a question"):
        load_rubric(str(bad))
    with pytest.raises(RubricError, match="no rubric 'nope'; choose one of: default"):
        load_rubric("nope")


@pytest.mark.slow
def test_the_demo_model_judges_its_own_adapter_end_to_end(demo_model: Path) -> None:
    """Batched replies from base and adapter, then the base model as judge: its verdicts are noise, so most are
    unreadable — and counted as such, never guessed."""
    evaluation: Any = pytest.importorskip("engine.evaluation")
    from tests.judge_helpers import demo_items, demo_peft_model

    model, tokenizer = demo_peft_model(demo_model)
    items = demo_items(tokenizer, count=3)
    result = evaluation.evaluate(
        model, tokenizer, items, "cpu", generations=1, max_new_tokens=6, max_prompts=2, batch_size=2,
        judge_criteria=CRITERIA,
    )  # fmt: skip
    assert result["held_out_prompts"] == 3 and result["bounded"] is True
    assert len(result["replies"]) == 2 and len(result["generations"]) == 1
    judge = result["judge"]
    assert judge["pairs"] == 2 and judge["bounded"] == {"judged": 2, "held_out": 3}
    assert judge["wins"] + judge["ties"] + judge["losses"] + judge["unparsed"] == 2
    assert len(judge["records"]) == 4 and all(isinstance(r["raw"], str) for r in judge["records"])
    assert "may be biased" in judge["note"]
    for name in CRITERIA:
        tally = judge["by_criterion"][name]
        assert tally["wins"] + tally["ties"] + tally["losses"] + tally["unparsed"] == 2


@pytest.mark.slow
def test_batched_generation_gives_the_replies_one_at_a_time_gives(demo_model: Path) -> None:
    from engine.generation import generate_batched
    from tests.judge_helpers import demo_items, demo_peft_model

    model, tokenizer = demo_peft_model(demo_model)
    side = tokenizer.padding_side
    prompts = [list(item.messages)[:-1] for item in demo_items(tokenizer, count=3)]
    batched = generate_batched(model, tokenizer, prompts, "cpu", adapter=False, max_new_tokens=8, batch_size=3)
    alone = [generate_batched(model, tokenizer, [p], "cpu", adapter=False, max_new_tokens=8)[0] for p in prompts]
    assert batched == alone
    assert any(batched) and tokenizer.padding_side == side  # the tokenizer's own padding side is restored

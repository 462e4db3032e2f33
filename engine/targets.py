"""The owner's four quality targets, each checked against what an evaluation measured: pass, fail or not measured.

The targets (an adapter a client can be shown):

- ``perplexity``: held-out perplexity at least 30% below the base model's;
- ``human``: human raters prefer the adapter's reply at least 15% more often than the base's (wins ÷ losses,
  ties aside, at least 1.15);
- ``retention``: the adapter keeps at least 95% of the base model's knowledge (``retained``: adapter score ÷
  base score, as a ratio);
- ``persona``: the adapter's replies match the advisor persona's voice in at least 85% of the test cases (the
  judge's persona criterion: its ``match_rate`` where given, else the share of cases where the adapter's reply
  was judged at least as true to the persona as the base's).

``check_targets`` reads eval.json's keys (``base_perplexity``/``adapter_perplexity``, ``human``, ``retention``,
``judge``) and is pure: the CLI and the dashboard call it on a stored evaluation, with a ``human`` result from the
ledger in place of eval.json's where one exists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["pass", "fail", "not measured"]

PERPLEXITY_REDUCTION = 0.30
HUMAN_PREFERENCE = 0.15
RETENTION = 0.95
PERSONA_MATCH = 0.85


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    label: str
    goal: str


TARGETS = (
    Target("perplexity", "perplexity", "held-out perplexity ≥ 30% below the base model's"),
    Target("human", "human preference", "raters prefer the adapter ≥ 15% more often than the base"),
    Target("retention", "knowledge retention", "the adapter keeps ≥ 95% of the base model's knowledge"),
    Target("persona", "persona voice", "replies match the persona's voice in ≥ 85% of test cases"),
)


_MARKS = {"pass": "✓ pass", "fail": "✗ fail", "not measured": "– not measured"}


def status_text(status: str) -> str:
    """The status with a mark beside it, so it never rests on colour alone."""
    return _MARKS.get(status, status)


def target_rows(targets: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(label, status, summary) of each target, in the targets' order: what the CLI and the dashboard list."""
    rows = []
    for target in TARGETS:
        result = targets.get(target.key) or {"status": "not measured", "summary": "not checked"}
        rows.append((target.label, status_text(result["status"]), result.get("summary", "")))
    return rows


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _meets(value: float, threshold: float) -> bool:
    """At or above the threshold; a value on it counts however the division rounded (23 ÷ 20 - 1 vs 0.15)."""
    return value >= threshold - 1e-9


def _shown(value: float, *, signed: bool = False) -> str:
    """A fraction as a percent to 0.1%, rounded down: a result just short of its target never reads as on it."""
    floored = math.floor(value * 1000 + 1e-9) / 1000
    return f"{floored:+.1%}" if signed else f"{floored:.1%}"


def _result(target: Target, status: Status, summary: str, **numbers: Any) -> dict[str, Any]:
    return {"label": target.label, "goal": target.goal, "status": status, "summary": summary, **numbers}


def _not_measured(target: Target, why: str) -> dict[str, Any]:
    return _result(target, "not measured", why)


def _perplexity(target: Target, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    base, adapter = _number(evaluation.get("base_perplexity")), _number(evaluation.get("adapter_perplexity"))
    if base is None or adapter is None or base <= 0:
        return _not_measured(target, "no held-out perplexity")
    reduction = 1.0 - adapter / base
    status: Status = "pass" if _meets(reduction, PERPLEXITY_REDUCTION) else "fail"
    summary = f"{_shown(reduction)} below the base ({base:.3g} → {adapter:.3g}); needs ≥ {PERPLEXITY_REDUCTION:.0%}"
    return _result(
        target, status, summary, base=base, adapter=adapter, reduction=reduction, threshold=PERPLEXITY_REDUCTION
    )


def _human(target: Target, human: Mapping[str, Any] | None) -> dict[str, Any]:
    if not human:
        return _not_measured(target, "no human ratings")
    # The ledger's summary (store.ratings) names the sides: the adapter's wins are the wins, the base's the losses.
    wins, losses, ties = (
        _number(human.get(key, human.get(alias)))
        for key, alias in (("wins", "adapter_wins"), ("losses", "base_wins"), ("ties", "ties"))
    )
    if wins is None or losses is None:
        rate = _number(human.get("win_rate"))
        if rate is None:
            return _not_measured(target, "no human ratings")
        preference = rate / (1.0 - rate) - 1.0 if rate < 1.0 else float("inf")
    elif wins + losses == 0:
        return _not_measured(target, "no rating preferred either reply")
    elif losses == 0:
        preference = float("inf")
    else:
        preference = wins / losses - 1.0
    status: Status = "pass" if _meets(preference, HUMAN_PREFERENCE) else "fail"
    counted = f" ({wins:.0f} wins, {ties or 0:.0f} ties, {losses:.0f} losses)" if wins is not None else ""
    how = "always" if preference == float("inf") else f"{_shown(preference, signed=True)} as often as the base"
    summary = f"adapter preferred {how}{counted}; needs ≥ +{HUMAN_PREFERENCE:.0%}"
    numbers = {k: human[k] for k in ("wins", "ties", "losses", "win_rate", "ci95", "ratings") if k in human}
    return _result(
        target, status, summary, preference=None if preference == float("inf") else preference,
        threshold=HUMAN_PREFERENCE, **numbers,
    )  # fmt: skip


def _retention(target: Target, retention: Mapping[str, Any] | None) -> dict[str, Any]:
    retained = _number((retention or {}).get("retained"))
    if retained is None:
        return _not_measured(target, "no forgetting check")
    status: Status = "pass" if _meets(retained, RETENTION) else "fail"
    summary = f"{_shown(retained)} of the base model's score kept; needs ≥ {RETENTION:.0%}"
    numbers = {k: retention[k] for k in ("base_score", "adapter_score", "tasks") if retention and k in retention}
    return _result(target, status, summary, retained=retained, threshold=RETENTION, **numbers)


def _persona_criterion(judge: Mapping[str, Any]) -> Mapping[str, Any] | None:
    by_criterion = judge.get("by_criterion")
    if not isinstance(by_criterion, Mapping):
        return None
    for name, result in by_criterion.items():
        if "persona" in str(name).lower() and isinstance(result, Mapping):
            return result
    return None


def _persona(target: Target, judge: Mapping[str, Any] | None) -> dict[str, Any]:
    criterion = _persona_criterion(judge or {})
    if criterion is None:
        return _not_measured(target, "no judged persona criterion")
    rate = _number(criterion.get("match_rate"))
    cases = _number(criterion.get("cases"))
    if rate is None:
        wins, ties, losses = (_number(criterion.get(k)) or 0.0 for k in ("wins", "ties", "losses"))
        cases = wins + ties + losses
        if not cases:
            return _not_measured(target, "no judged persona criterion")
        rate = (wins + ties) / cases
    status: Status = "pass" if _meets(rate, PERSONA_MATCH) else "fail"
    of = f" of {cases:.0f} cases" if cases else ""
    summary = f"persona voice matched in {_shown(rate)}{of}; needs ≥ {PERSONA_MATCH:.0%}"
    return _result(target, status, summary, match_rate=rate, cases=cases, threshold=PERSONA_MATCH)


def check_targets(evaluation: Mapping[str, Any], *, human: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Each target's result, keyed as ``TARGETS``: status, a one-line summary, and the numbers behind it.

    ``human`` replaces the evaluation's own ``human`` result (ratings are gathered after the job ended)."""
    ratings = human if human is not None else evaluation.get("human")
    by_key = {t.key: t for t in TARGETS}
    return {
        "perplexity": _perplexity(by_key["perplexity"], evaluation),
        "human": _human(by_key["human"], ratings if isinstance(ratings, Mapping) else None),
        "retention": _retention(by_key["retention"], _mapping(evaluation.get("retention"))),
        "persona": _persona(by_key["persona"], _mapping(evaluation.get("judge"))),
    }


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None

"""Preference tallies — wins, ties and losses of the adapter against the base — with the win rate and its
95% Wilson score interval.

The win rate counts a tie as half a win: ``(wins + ties / 2) / (wins + ties + losses)``, the share of
comparisons the adapter takes. The interval is Wilson's score interval (E. B. Wilson, "Probable inference, the
law of succession, and statistical inference", JASA 1927), the one statsmodels' ``proportion_confint(...,
method="wilson")`` gives; written out here because the dashboard side, which rates replies too, installs no
statistics stack. Pure Python: the engine, the CLI and the dashboard all use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson's score interval for a proportion ``successes / n``; None when there is nothing to estimate."""
    if n <= 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Tally:
    """Outcomes of adapter-versus-base comparisons; ``unparsed`` ones (no usable verdict) are not in ``n``."""

    wins: int = 0
    ties: int = 0
    losses: int = 0
    unparsed: int = 0

    def add(self, outcome: str | None) -> None:
        """Count one outcome: "win", "tie", "loss", or None for a verdict that could not be read."""
        if outcome == "win":
            self.wins += 1
        elif outcome == "tie":
            self.ties += 1
        elif outcome == "loss":
            self.losses += 1
        else:
            self.unparsed += 1

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    def win_rate(self) -> float | None:
        return (self.wins + self.ties / 2) / self.n if self.n else None

    def summary(self) -> dict[str, Any]:
        """The tally as eval.json holds it: counts, win rate and its 95% interval (None when nothing counted)."""
        interval = wilson_interval(self.wins + self.ties / 2, self.n)
        return {
            "win_rate": self.win_rate(),
            "ci95": list(interval) if interval else None,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "unparsed": self.unparsed,
        }

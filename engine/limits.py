"""The limits a job keeps by itself: its rate, a cost ceiling and a maximum duration, handed over at launch.

The supervisor that launches a job knows the user's limits (the job's ``max_cost_usd`` and ``max_hours``, the
runaway hard cap, the maximum duration, what the monthly budget had left) and hands the engine the smallest of
each kind, with what earlier attempts of the job already spent. The engine checks them at every training step
and at every heartbeat, so a job stops at its limit — checkpointed, ``cancelled`` with the figures — with
nothing of the user's running.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from engine import PROCESS_STARTED

RATE_ENV = "LORAPOD_RATE_USD_PER_HOUR"
LIMITS_ENV = "LORAPOD_LIMITS"


@dataclass(frozen=True)
class LimitReached:
    """A limit a job reached: ``cost`` or ``duration``, and the reason with its figures."""

    kind: str
    reason: str


@dataclass(frozen=True)
class Limits:
    """A job's rate and limits as one attempt of it sees them."""

    rate_usd_per_hour: float = 0.0
    ceiling_usd: float | None = None  # the smallest cost limit on the whole job
    ceiling_name: str = ""  # which limit it is, in words ("the job's max_cost_usd")
    spent_before_usd: float = 0.0  # what earlier attempts of the job cost; counts against the ceiling
    max_hours: float | None = None  # the smallest duration limit on the whole job
    max_hours_name: str = ""
    hours_before: float = 0.0  # how long earlier attempts ran

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """The limits a launcher put in the environment (none: no limits, and the rate if one is given)."""
        env = os.environ if env is None else env
        rate = float(env.get(RATE_ENV) or 0.0)
        data = json.loads(env.get(LIMITS_ENV) or "{}")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**{**known, "rate_usd_per_hour": rate})

    def to_env(self) -> dict[str, str]:
        data = asdict(self)
        rate = data.pop("rate_usd_per_hour")
        return {RATE_ENV: f"{rate:.6f}", LIMITS_ENV: json.dumps(data)}

    def cost(self, elapsed_s: float) -> float:
        """What this attempt has cost after ``elapsed_s`` seconds."""
        return self.rate_usd_per_hour * elapsed_s / 3600

    def crossed(self, elapsed_s: float) -> LimitReached | None:
        """The limit the job has reached, with the figures, or None while it is within its limits."""
        if self.ceiling_usd is not None and self.rate_usd_per_hour > 0:
            total = self.spent_before_usd + self.cost(elapsed_s)
            if total >= self.ceiling_usd:
                earlier = f", ${self.spent_before_usd:,.2f} of it in earlier attempts" if self.spent_before_usd else ""
                return LimitReached(
                    "cost",
                    f"stopped at {self.ceiling_name or 'its cost ceiling'}: ${total:,.2f} spent "
                    f"(${self.rate_usd_per_hour:,.2f}/h for {elapsed_s:,.1f} s{earlier}) reached "
                    f"${self.ceiling_usd:,.2f}",
                )
        if self.max_hours is not None:
            hours = self.hours_before + elapsed_s / 3600
            if hours >= self.max_hours:
                return LimitReached(
                    "duration",
                    f"stopped at {self.max_hours_name or 'its maximum duration'}: running for {hours:,.3f} h "
                    f"reached {self.max_hours:g} h",
                )
        return None


def process_elapsed() -> float:
    """Seconds since this engine process began."""
    return time.monotonic() - PROCESS_STARTED

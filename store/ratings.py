"""Blind human ratings of a job's held-out replies: which prompts to show, in which order, and the tally.

The pairs are the base and adapter replies the job's eval event carries. Each (job, prompt, rater) gets its own
random but repeatable order — the adapter's reply shown as A or as B — so a rater cannot learn a side, and the
label is stored with the rating. A rating says which *reply* won (adapter, base or tie); a skip records nothing.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select

from engine.preference import Tally
from store.db import Ledger
from store.errors import StoreError
from store.events import list_events
from store.models import Rating, utcnow

CHOICES = ("adapter", "base", "tie")
HUMAN_TARGET = 0.15  # raters prefer the adapter at least 15% more often than the base
TABLE = Rating.__table__  # type: ignore[attr-defined]


def held_out_pairs(ledger: Ledger, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """The job's held-out prompts with both replies; StoreError when it has none to rate."""
    events = list_events(ledger, job_id, types=["eval"])
    pairs = list(events[-1].payload.get("replies") or []) if events else []
    if not pairs:
        raise StoreError(
            "this job has no held-out replies to rate (it has not been evaluated, or had no held-out split)"
        )
    return pairs


def adapter_label(job_id: uuid.UUID, prompt_index: int, rater: str) -> str:
    """Where the adapter's reply is shown to this rater for this prompt: "A" or "B", at random but repeatably."""
    return random.Random(f"{job_id}:{prompt_index}:{rater}").choice("AB")


def choice_from_key(key: str, label: str) -> str | None:
    """The rating a key records ("a", "b" or "t"/"tie") given where the adapter's reply was; None for a skip."""
    key = key.strip().lower()
    if key in ("t", "tie"):
        return "tie"
    if key in ("a", "b"):
        return "adapter" if key.upper() == label else "base"
    return None


def record_rating(ledger: Ledger, job_id: uuid.UUID, prompt_index: int, rater: str, choice: str, label: str) -> None:
    """Store one rating; the same rater rating the same prompt again replaces it."""
    if choice not in CHOICES:
        raise StoreError(f"rating: {choice!r} is not one of {', '.join(CHOICES)}")
    if not rater.strip():
        raise StoreError("rater: a name is needed (--rater NAME)")
    row = {"id": uuid.uuid4(), "job_id": job_id, "prompt_index": prompt_index, "rater": rater.strip(),
           "choice": choice, "adapter_label": label, "updated_at": utcnow()}  # fmt: skip
    statement = sqlite_insert(TABLE).values(row)
    statement = statement.on_conflict_do_update(
        index_elements=["job_id", "prompt_index", "rater"],
        set_={"choice": statement.excluded.choice, "adapter_label": statement.excluded.adapter_label,
              "updated_at": statement.excluded.updated_at},
    )  # fmt: skip
    with ledger.write() as session:
        session.execute(statement)


def ratings(ledger: Ledger, job_id: uuid.UUID) -> list[Rating]:
    with ledger.read() as session:
        statement = select(Rating).where(col(Rating.job_id) == job_id).order_by(col(Rating.updated_at))
        return list(session.exec(statement).all())


def rated_by(ledger: Ledger, job_id: uuid.UUID, rater: str) -> set[int]:
    return {r.prompt_index for r in ratings(ledger, job_id) if r.rater == rater.strip()}


def human_summary(ledger: Ledger, job_id: uuid.UUID) -> dict[str, Any] | None:
    """eval.json's ``human``: {ratings, adapter_wins, base_wins, ties, win_rate, ci95, raters}; None if unrated.

    The win rate counts a tie as half (engine.preference); ci95 is its Wilson interval.
    """
    rows = ratings(ledger, job_id)
    if not rows:
        return None
    tally = Tally()
    for row in rows:
        tally.add({"adapter": "win", "base": "loss", "tie": "tie"}[row.choice])
    summary = tally.summary()
    return {
        "ratings": len(rows),
        "adapter_wins": tally.wins,
        "base_wins": tally.losses,
        "ties": tally.ties,
        "win_rate": summary["win_rate"],
        "ci95": summary["ci95"],
        "raters": sorted({row.rater for row in rows}),
        "target": HUMAN_TARGET,
    }

"""Ratings travel through Supabase: several raters, on several machines, rate the same job."""

from __future__ import annotations

from store.db import Ledger
from store.events import record_events
from store.ratings import human_summary, ratings, record_rating
from store.sync import sync
from tests.supabase_helpers import make_job
from tests.test_rating import REPLIES


def test_raters_on_two_machines_rate_one_job_and_both_see_every_rating(
    db: str, two_ledgers: tuple[Ledger, Ledger]
) -> None:
    a, b = two_ledgers
    job = make_job(a, "rated elsewhere")
    record_events(a, job, [{"seq": 1000, "ts": "2026-11-22T10:00:00+00:00", "type": "eval", "replies": REPLIES}])
    record_rating(a, job, 0, "ana", "adapter", "A")
    record_rating(a, job, 1, "ana", "base", "B")
    report = sync(a, db)
    assert report.table("ratings").sent == 2
    sync(b, db)
    assert {(r.rater, r.prompt_index, r.choice) for r in ratings(b, job)} == {("ana", 0, "adapter"), ("ana", 1, "base")}

    # Ben rates on B; Ana, now on B too, changes her mind about prompt 1: the newest rating wins everywhere.
    record_rating(b, job, 0, "ben", "tie", "B")
    record_rating(b, job, 1, "ana", "tie", "B")
    for ledger in (b, a):
        sync(ledger, db)
    mine, theirs = human_summary(a, job), human_summary(b, job)
    assert mine == theirs
    assert mine is not None
    assert (mine["ratings"], mine["adapter_wins"], mine["base_wins"], mine["ties"]) == (3, 1, 0, 2)
    assert mine["raters"] == ["ana", "ben"]
    remote = {(r["rater"], r["prompt_index"]): r["choice"] for r in _remote_ratings(db)}
    assert remote == {("ana", 0): "adapter", ("ana", 1): "tie", ("ben", 0): "tie"}

    # An older rating arriving late never replaces a newer one.
    sync(a, db)
    assert {(r.rater, r.prompt_index): r.choice for r in ratings(a, job)}[("ana", 1)] == "tie"


def _remote_ratings(db: str) -> list[dict[str, object]]:
    import psycopg

    with psycopg.connect(db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute("SELECT rater, prompt_index, choice FROM lorapod.ratings")
        return list(cursor.fetchall())

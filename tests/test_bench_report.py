"""`make bench` keeps a table of every suite's latest figures in BENCHMARKS.md, between its markers."""

from __future__ import annotations

from benchmarks.__main__ import BEGIN, END, table, with_table

RECORD = {
    "suite": "ledger",
    "when": "2026-11-22T10:00:00+00:00",
    "machine": "x86_64, 2 CPUs",
    "results": [
        {"name": "event ingest", "value": 52000, "unit": "events/s", "target": "≥ 20,000", "conditions": "a | b"},
        {"name": "list all", "value": 140, "unit": "ms", "conditions": "no page"},
    ],
}


def test_the_table_has_a_row_per_figure_with_its_conditions_and_when_it_was_measured() -> None:
    rows = table([RECORD]).splitlines()
    assert len(rows) == 4
    assert rows[2] == (
        "| ledger | event ingest | 52000 events/s | ≥ 20,000 | a \\| b | 2026-11-22 10:00 UTC, x86_64, 2 CPUs |"
    )
    assert "| list all | 140 ms | — |" in rows[3]


def test_the_table_is_added_once_then_replaced_keeping_the_hand_written_sections() -> None:
    report = "# Benchmarks\n\n## CLI\n\nprose\n"
    first = with_table(report, "| old |")
    assert first.startswith(report.rstrip("\n")) and first.count(BEGIN) == 1
    second = with_table(first + "\n## Written after\n", "| new |")
    assert "| old |" not in second and "| new |" in second
    assert second.count(BEGIN) == second.count(END) == 1
    assert second.endswith("## Written after\n") and "prose" in second


def test_running_one_suite_keeps_the_other_suites_rows() -> None:
    """The table was rebuilt from result files alone: one suite's run dropped every other suite's figures."""
    from benchmarks.__main__ import table, table_rows, with_table

    record = {"suite": "cli", "when": "2026-12-05T05:00:00+00:00", "machine": "m",
              "results": [{"name": "help", "value": 50, "unit": "ms", "target": "", "conditions": "c"}]}  # fmt: skip
    before = with_table("# Benchmarks\n", table([record, {**record, "suite": "ledger"}]))
    newer = {**record, "when": "2026-12-06T05:00:00+00:00", "results": [{**record["results"][0], "value": 40}]}
    after = with_table(before, table([newer], kept=table_rows(before)))
    rows = [line for line in after.splitlines() if line.startswith("| cli") or line.startswith("| ledger")]
    assert [row.split(" | ")[0] for row in rows] == ["| cli", "| ledger"]
    assert "40 ms" in rows[0] and "50 ms" in rows[1]

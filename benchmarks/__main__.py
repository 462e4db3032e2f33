"""Run the benchmarks, print each figure with its conditions, and record them.

``python -m benchmarks [SUITE…]`` (``make bench`` runs them all). Each suite's figures go to
``benchmarks/results/<suite>.json``; the table between the markers in BENCHMARKS.md is then rebuilt from
every suite's latest results, so running one suite refreshes its rows and keeps the others'.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import (
    cli,
    dataset,
    evaluation,
    governing,
    ledger,
    local_run,
    notices,
    playground,
    projection,
    ranks,
    report,
    runpod,
    supabase,
    training,
    tui,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
REPORT = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"
SUITES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "cli": cli.run,
    "ledger": ledger.run,
    "dataset": dataset.run,
    "local_run": local_run.run,
    "training": training.run,
    "ranks": ranks.run,
    "runpod": runpod.run,
    "supabase": supabase.run,
    "tui": tui.run,
    "projection": projection.run,
    "governing": governing.run,
    "notices": notices.run,
    "evaluation": evaluation.run,
    "playground": playground.run,
    "report": report.run,
}


def machine() -> str:
    """The machine, and how busy it was as the suite began: figures taken beside other work say so."""
    busy = f", load {os.getloadavg()[0]:.1f}"
    if (priority := os.nice(0)) != 0:
        busy += f", run at nice {priority}"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}{busy}"


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in SUITES]
    if unknown:
        print(f"unknown suite {', '.join(unknown)}; choose from {', '.join(SUITES)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    for name in argv or list(SUITES):
        print(f"running {name}…", file=sys.stderr, flush=True)
        record = {"suite": name, "when": _now(), "machine": machine(), "results": SUITES[name]()}
        (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        print_results(record["results"])
    report = REPORT.read_text()
    REPORT.write_text(with_table(report, table(load_results(), kept=table_rows(report))))
    print(f"\n{machine()}; figures in {RESULTS}/, table in {REPORT.name}", file=sys.stderr)
    return 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def print_results(results: list[dict[str, Any]]) -> None:
    width = max((len(r["name"]) for r in results), default=10)
    print(f"\n{'benchmark':<{width}}  {'value':>10}  unit / target")
    for r in results:
        target = f"  (target {r['target']})" if r.get("target") else ""
        print(f"{r['name']:<{width}}  {r['value']:>10}  {r['unit']}{target}")
        print(f"{'':<{width}}  {'':>10}  {r['conditions']}")


def load_results() -> list[dict[str, Any]]:
    """Every suite's latest record, in the suites' order."""
    records = []
    for name in SUITES:
        path = RESULTS / f"{name}.json"
        if path.exists():
            records.append(json.loads(path.read_text()))
    return records


def table_rows(report: str) -> dict[str, list[str]]:
    """The rows of the table now in BENCHMARKS.md, by suite."""
    if BEGIN not in report or END not in report:
        return {}
    body = report.partition(BEGIN)[2].partition(END)[0]
    rows: dict[str, list[str]] = {}
    for line in body.splitlines()[2:]:
        if line.startswith("| "):
            rows.setdefault(line[2:].split(" | ", 1)[0], []).append(line)
    return rows


def table(records: list[dict[str, Any]], kept: dict[str, list[str]] | None = None) -> str:
    """The table of every suite's latest figures; a suite with no results here keeps its rows from ``kept``
    (the table as it was), so running one suite never drops the others' figures."""
    lines = ["| suite | figure | value | target | conditions | measured |", "|---|---|---|---|---|---|"]
    by_suite = {record["suite"]: record for record in records}
    for name in [*SUITES, *(suite for suite in by_suite if suite not in SUITES)]:
        record = by_suite.get(name)
        if record is None:
            lines.extend((kept or {}).get(name, []))
            continue
        when = f"{record['when'][:16].replace('T', ' ')} UTC, {record['machine']}"
        for r in record["results"]:
            cells = [record["suite"], r["name"], f"{r['value']} {r['unit']}", r.get("target") or "—", r["conditions"]]
            lines.append("| " + " | ".join(_cell(c) for c in [*cells, when]) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def with_table(report: str, rows: str) -> str:
    """BENCHMARKS.md with the generated table between its markers (added at the end the first time)."""
    block = f"{BEGIN}\n{rows}\n{END}"
    if BEGIN in report and END in report:
        head, _, rest = report.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + block + tail
    return report.rstrip("\n") + "\n\n## Latest `make bench`\n\n" + block + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

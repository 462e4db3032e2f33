"""Run every benchmark, print a table, and write the figures to benchmarks/results/latest.json."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import cli, dataset, ledger, local_run, supabase, tui

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    suites = {
        "cli": cli.run,
        "ledger": ledger.run,
        "dataset": dataset.run,
        "local_run": local_run.run,
        "supabase": supabase.run,
        "tui": tui.run,
    }
    wanted = sys.argv[1:] or list(suites)
    results = []
    for name in wanted:
        print(f"running {name}…", file=sys.stderr, flush=True)
        results.extend(suites[name]())
    width = max(len(r["name"]) for r in results)
    print(f"\n{'benchmark':<{width}}  {'value':>10}  unit / target")
    for r in results:
        target = f"  (target {r['target']})" if r.get("target") else ""
        print(f"{r['name']:<{width}}  {r['value']:>10}  {r['unit']}{target}")
        print(f"{'':<{width}}  {'':>10}  {r['conditions']}")
    RESULTS.mkdir(exist_ok=True)
    record = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "results": results}
    (RESULTS / "latest.json").write_text(json.dumps(record, indent=2))
    print(f"\n{machine()}; written to {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()

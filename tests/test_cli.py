"""The ``lorapod`` command: fast help without torch, versions, JSON output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import presets
from store.db import Ledger
from store.jobs import create_job, short_id, transition
from store.status import JobStatus
from tests.conftest import ROOT, run_cli, run_lorapod
from tui.cli import COMMANDS

HEAVY = ("torch", "transformers", "peft", "trl", "bitsandbytes", "textual")


def _imported_modules(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from tui.cli import main; main()", *args],
        check=False,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split("|")[-1] for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {name.strip() for name in lines}


def test_help_imports_no_torch_and_no_command_modules() -> None:
    modules = _imported_modules("--help")
    assert not {m for m in modules if m.split(".")[0] in HEAVY}
    assert "tui.cli.costs" not in modules and "store.db" not in modules


@pytest.mark.parametrize(
    "args",
    [
        ("presets", "list"),
        ("config", "show"),
        ("jobs",),
        ("costs",),
        ("dataset", "validate", str(ROOT / "samples" / "brightrun-sample.json")),
    ],
)
def test_data_commands_import_no_training_stack(args: tuple[str, ...]) -> None:
    modules = _imported_modules(*args)
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


def test_help_lists_every_command_and_each_command_has_help() -> None:
    result = run_lorapod("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout
        assert run_cli(name, "--help").exit_code == 0


def test_version() -> None:
    result = run_lorapod("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("lorapod, version 0.1.0")


def test_no_arguments_prints_help() -> None:
    result = run_cli()
    assert result.exit_code == 0 and "Commands" in result.stdout


def test_usage_errors_exit_2() -> None:
    assert run_cli("frobnicate").exit_code == 2
    assert run_cli("jobs", "--status", "sleeping").exit_code == 2
    assert run_cli("estimate").exit_code == 2  # --tokens missing
    assert run_cli("estimate", "--tokens", "0").exit_code == 2


def test_jobs_lists_the_ledger(ledger: Ledger) -> None:
    assert json.loads(run_cli("jobs", "--json").stdout) == {"total": 0, "jobs": []}
    assert "no jobs yet" in run_cli("jobs").stdout
    first = create_job(ledger, presets.get("smoke").to_spec("d.json"), name="smoke one")
    second = create_job(ledger, presets.get("balanced").to_spec("d.json"), name="big one")
    transition(ledger, second.id, JobStatus.TRAINING)
    data = json.loads(run_cli("jobs", "--json").stdout)
    assert data["total"] == 2
    assert [j["name"] for j in data["jobs"]] == ["big one", "smoke one"]
    assert data["jobs"][0]["status"] == "training"
    active = json.loads(run_cli("jobs", "--status", "queued", "--json").stdout)
    assert [j["short_id"] for j in active["jobs"]] == [short_id(first.id)]
    table = run_cli("jobs").stdout
    assert short_id(first.id) in table and "training" in table
    limited = run_cli("jobs", "--limit", "1").stdout
    assert "showing 1 of 2" in limited


def test_unexpected_ledger_problems_are_reported_without_a_traceback(lorapod_home: Path) -> None:
    lorapod_home.mkdir(parents=True)
    (lorapod_home / "ledger.sqlite").write_bytes(b"this is not a database, just text that happens to be here" * 100)
    result = run_lorapod("jobs")
    assert result.returncode == 1
    assert "ledger" in result.stderr and "Traceback" not in result.stderr


def test_every_package_error_shares_one_root() -> None:
    """The engine's, the store's, a provider's and the supervisor's errors are all LorapodError, which the
    command line and the dashboard show as a message."""
    from engine import EngineError, LorapodError
    from remote.provider import ProviderError
    from remote.runpod.errors import NoCapacity
    from remote.supervisor import BudgetRefused, SupervisorError
    from store.errors import StoreError, SyncError
    from tui.cli import as_failure

    for error in (EngineError, StoreError, SyncError, ProviderError, NoCapacity, SupervisorError, BudgetRefused):
        assert issubclass(error, LorapodError), error
    failure = as_failure(SupervisorError("job 1234 is already completed"))
    assert failure is not None and failure.message == "job 1234 is already completed"
    assert as_failure(KeyError("internal")) is None

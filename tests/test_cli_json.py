"""Every action command takes --json: one result document on stdout; errors exit 1 with the message on stderr."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import presets
from store.db import Ledger
from store.jobs import create_job, short_id, transition
from store.status import JobStatus
from tests.conftest import run_cli
from tests.engine_helpers import SAMPLE
from tests.test_local_runs import lorapod


def document(result: Any) -> dict[str, Any]:
    assert result.exit_code in (0, 1), result.stderr
    return dict(json.loads(result.stdout))


def test_cancel_json_on_a_job_with_no_run(ledger: Ledger) -> None:
    job = create_job(ledger, presets.get("smoke").to_spec("d.json"), name="never ran")
    result = run_cli("cancel", short_id(job.id), "--yes", "--json")
    assert result.exit_code == 0, result.stderr
    data = document(result)
    assert data["action"] == "cancel" and data["had_live_engine"] is False
    assert data["job"]["id"] == str(job.id) and data["job"]["status"] == "cancelled"


def test_watch_json_on_ended_jobs_prints_the_job_and_exits_by_its_status(ledger: Ledger) -> None:
    done = create_job(ledger, presets.get("smoke").to_spec("d.json"), name="done")
    transition(ledger, done.id, JobStatus.TRAINING)
    transition(ledger, done.id, JobStatus.COMPLETED)
    failed = create_job(ledger, presets.get("smoke").to_spec("d.json"), name="broke")
    transition(ledger, failed.id, JobStatus.TRAINING)
    transition(ledger, failed.id, JobStatus.FAILED, error_category="dataset", error_message="no examples")
    ok = run_cli("watch", short_id(done.id), "--json")
    assert ok.exit_code == 0 and document(ok)["job"]["status"] == "completed"
    bad = run_cli("watch", short_id(failed.id), "--json")
    assert bad.exit_code == 1
    data = document(bad)
    assert data["action"] == "watch" and data["job"]["status"] == "failed"


@pytest.mark.parametrize("command", ["resume", "retry"])
def test_json_errors_exit_1_with_the_message_on_stderr(ledger: Ledger, command: str) -> None:
    job = create_job(ledger, presets.get("smoke").to_spec("d.json"), name="still queued")
    result = run_cli(command, short_id(job.id), "--json", "--yes" if command == "retry" else "--detach")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "queued" in result.stderr or "finished" in result.stderr


def test_resume_json_refused_by_the_budget(ledger: Ledger) -> None:
    spec = presets.get("smoke").to_spec("d.json")
    job = create_job(ledger, spec, name="too dear", estimated_cost_usd=10_000.0)
    transition(ledger, job.id, JobStatus.TRAINING)
    transition(ledger, job.id, JobStatus.INTERRUPTED)
    result = run_cli("resume", short_id(job.id), "--json")
    assert result.exit_code == 1 and result.stdout == ""
    assert "refused by the budget" in result.stderr


@pytest.mark.slow
def test_a_script_runs_watches_reads_downloads_and_retries_with_json(
    lorapod_home: Path, demo_model: Path, tmp_path: Path
) -> None:
    shutil.copytree(demo_model, lorapod_home / "models" / "tiny-llama")
    ran = lorapod("run", "--preset", "smoke", "--dataset", str(SAMPLE), "--name", "scripted", "--json")
    assert ran.returncode == 0, ran.stderr
    data = json.loads(ran.stdout)
    assert data["action"] == "run" and data["detached"] is False
    assert data["job"]["status"] == "completed" and data["job"]["name"] == "scripted"
    assert data["validation"]["examples"] and data["job"]["loss"]["final"] is not None
    job = data["job"]["short_id"]

    watched = json.loads(lorapod("watch", job, "--json").stdout)
    assert watched["action"] == "watch" and watched["job"]["status"] == "completed"

    logs = json.loads(lorapod("logs", job, "--json").stdout)
    assert logs["job_id"] == data["job"]["id"] and logs["text"] and logs["offset"] > 0
    followed = [json.loads(line) for line in lorapod("logs", job, "-f", "--json").stdout.splitlines()]
    assert followed[-1]["end"] is True and "".join(chunk["text"] for chunk in followed) == logs["text"]

    got = lorapod("download", job, "--package", "adapter", "-o", str(tmp_path / "out"), "--json")
    assert got.returncode == 0, got.stderr
    package = json.loads(got.stdout)
    assert package["verified"] is True and Path(package["path"]).is_file()
    assert package["sha256"] == next(a["sha256"] for a in data["job"]["artifacts"] if a["kind"] == "adapter")
    where = json.loads(lorapod("download", job, "--path", "--json").stdout)
    assert where["storage_path"] and where["package"] == "adapter"

    retried = lorapod("retry", job, "--yes", "--detach", "--json")
    assert retried.returncode == 0, retried.stderr
    again = json.loads(retried.stdout)
    assert again["action"] == "retry" and again["retry_of"] == data["job"]["id"]
    assert {c["field"] for c in again["changes"]} <= {"job_id", "name"}
    assert again["job"]["parent_job_id"] == data["job"]["id"]

    cancelled = lorapod("cancel", again["job"]["short_id"], "--yes", "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    stopped = json.loads(cancelled.stdout)
    assert stopped["action"] == "cancel" and stopped["job"]["status"] == "cancelled"

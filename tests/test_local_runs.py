"""Local runs through the command line: the supervisor, the local provider and every job action."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.engine_helpers import SAMPLE, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def home(lorapod_home: Path, demo_model: Path) -> Path:
    """A lorapod installation whose demo model is already built (so each test need not build it)."""
    shutil.copytree(demo_model, lorapod_home / "models" / "tiny-llama")
    return lorapod_home


def lorapod(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tui.cli import main; main()", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from tui.cli import main; main()", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def show(job: str) -> dict[str, Any]:
    result = lorapod("show", job, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def only_job() -> str:
    jobs = json.loads(lorapod("jobs", "--json").stdout)["jobs"]
    return str(jobs[0]["short_id"])


def workdir_events(home: Path, job: str) -> list[dict[str, Any]]:
    (workdir,) = (home / "jobs").glob(f"{job}*")
    path = workdir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ledger_rows(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "ledger.sqlite") as db:
        return db.execute(sql).fetchall()


def smoke(*extra: str) -> list[str]:
    return ["run", "--preset", "smoke", "--dataset", str(SAMPLE), *extra]


def final_loss(home: Path, job: str) -> float:
    losses = [e["loss"] for e in workdir_events(home, job) if e["type"] == "metrics" and e.get("loss") is not None]
    return float(losses[-1])


def test_a_local_job_runs_to_completion_with_ledger_packages_and_downloads(home: Path, tmp_path: Path) -> None:
    result = lorapod(*smoke("--name", "first"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stage: training" in result.stdout and "completed" in result.stdout
    job = only_job()
    details = show(job)
    assert details["status"] == "completed" and details["name"] == "first"
    assert details["progress"]["step"] == details["progress"]["total_steps"] > 0
    assert details["loss"]["final"] is not None and details["evaluation"]["adapter_perplexity"] is not None
    assert [a["outcome"] for a in details["attempts"]] == ["completed"]
    events = workdir_events(home, job)
    job_hex = details["id"].replace("-", "")
    assert ledger_rows(home, f"select count(*), max(seq) from job_events where job_id = '{job_hex}'") == [
        (len(events), len(events))
    ]
    metric_steps = {e["step"] for e in events if e["type"] == "metrics"}
    assert ledger_rows(home, "select count(*) from training_metrics_history") == [(len(metric_steps),)]
    assert {a["kind"] for a in details["artifacts"]} == {"adapter", "full", "deploy"}
    assert ledger_rows(home, "select count(*) from training_files") == [(1,)]
    for kind in ("adapter", "full", "deploy"):
        downloaded = lorapod("download", job, "--package", kind, "-o", str(tmp_path / "dl"))
        assert downloaded.returncode == 0, downloaded.stderr
        assert "sha256 verified" in downloaded.stdout
    assert len(list((tmp_path / "dl").glob("*.zip"))) == 3
    exported = lorapod("export", job, "--format", "json")
    assert len(json.loads(exported.stdout)["metrics"]) == len(metric_steps)
    csv_rows = lorapod("export", job).stdout.strip().splitlines()
    assert csv_rows[0].startswith("step,epoch,loss") and len(csv_rows) == len(metric_steps) + 1

    # The packages were stored in the local artifact store, and downloads come from there.
    stored = sorted(p.name for p in (home / "artifacts" / "jobs").glob(f"{job}*/*.zip"))
    assert len(stored) == 3 and all(a["path"].startswith("file://") for a in details["artifacts"])

    # A package altered after the fact is refused.
    (package,) = (home / "artifacts" / "jobs").glob(f"{job}*/*-adapter.zip")
    package.write_bytes(package.read_bytes() + b"tampered")
    refused = lorapod("download", job, "--package", "adapter", "-o", str(tmp_path / "dl2"))
    assert refused.returncode == 1 and "checksum mismatch" in refused.stderr
    assert not list((tmp_path / "dl2").glob("*.zip"))

    # A ledger emptied to 0 bytes is kept aside and the job rebuilt from its folder, as it was.
    package.write_bytes(package.read_bytes().removesuffix(b"tampered"))
    (home / "ledger.sqlite").write_bytes(b"")
    listed = lorapod("jobs")
    assert "was empty (0 bytes)" in listed.stderr and "rebuilt 1 job" in listed.stderr
    assert len(list(home.glob("ledger.sqlite.empty-*Z"))) == 1  # its -wal and -shm, if any, beside it
    rebuilt = show(job)
    for key in ("status", "name", "progress", "loss", "evaluation"):
        assert rebuilt[key] == details[key], key
    assert [(a["kind"], a["path"]) for a in rebuilt["artifacts"]] == [
        (a["kind"], a["path"]) for a in details["artifacts"]
    ]
    assert ledger_rows(home, f"select count(*) from job_events where job_id = '{job_hex}'") == [(len(events),)]
    downloaded = lorapod("download", job, "--package", "adapter", "-o", str(tmp_path / "dl3"))
    assert downloaded.returncode == 0 and "sha256 verified" in downloaded.stdout, downloaded.stderr


def test_cancel_mid_run_ends_cancelled_with_a_checkpoint(home: Path) -> None:
    assert lorapod(*smoke("--detach")).returncode == 0
    job = only_job()
    wait_for(lambda: any(e["type"] == "checkpoint" for e in workdir_events(home, job)), timeout=180)
    result = lorapod("cancel", job, "--yes")
    assert result.returncode == 0, result.stderr
    details = show(job)
    assert details["status"] == "cancelled"
    checkpoints = [e for e in workdir_events(home, job) if e["type"] == "checkpoint"]
    assert checkpoints[-1]["reason"] in ("cancel", "final")
    assert details["attempts"][-1]["outcome"] == "cancelled"


def test_kill_9_makes_it_interrupted_and_resume_finishes_with_the_same_loss(home: Path) -> None:
    assert lorapod(*smoke("--name", "reference")).returncode == 0
    reference = only_job()
    expected = final_loss(home, reference)

    assert lorapod(*smoke("--detach", "--name", "killed")).returncode == 0
    job = only_job()
    wait_for(
        lambda: (
            sum(e["type"] == "checkpoint" for e in workdir_events(home, job)) >= 1
            and any(e["type"] == "metrics" and e["step"] >= 12 for e in workdir_events(home, job))
        ),
        timeout=180,
    )
    pid = show(job)["attempts"][-1]
    (workdir,) = (home / "jobs").glob(f"{job}*")
    os.kill(int((workdir / "engine.pid").read_text()), signal.SIGKILL)
    watched = lorapod("watch", job)
    assert watched.returncode == 1
    assert "interrupted" in watched.stdout and f"lorapod resume {job}" in watched.stdout
    assert show(job)["status"] == "interrupted"

    resumed = lorapod("resume", job)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    details = show(job)
    assert details["status"] == "completed"
    assert [a["outcome"] for a in details["attempts"]] == ["interrupted", "completed"]
    assert pid["number"] == 1
    assert final_loss(home, job) == expected  # bit-identical on CPU


def test_a_detached_job_runs_alone_and_watch_catches_up_exactly(home: Path) -> None:
    launched = lorapod(*smoke("--detach"))
    assert launched.returncode == 0 and "lorapod watch" in launched.stdout
    job = only_job()
    # Nothing follows it: the engine finishes on its own.
    wait_for(lambda: any(e.get("stage") == "completed" for e in workdir_events(home, job)), timeout=300)
    before = show(job)
    assert before["status"] == "completed"  # `show` caught up on its own
    watched = lorapod("watch", job)
    assert watched.returncode == 0
    events = workdir_events(home, job)
    seqs = [row[0] for row in ledger_rows(home, "select seq from job_events order by seq")]
    assert seqs == [e["seq"] for e in events]  # none lost, none twice


def test_two_supervisors_on_one_job_neither_double_ingest_nor_fight(home: Path) -> None:
    assert lorapod(*smoke("--detach")).returncode == 0
    job = only_job()
    watchers = [spawn("watch", job), spawn("watch", job)]
    outputs = [w.communicate(timeout=300)[0] for w in watchers]
    assert [w.returncode for w in watchers] == [0, 0], outputs
    assert any("another lorapod process supervises" in out for out in outputs)
    assert all("completed" in out for out in outputs)
    events = workdir_events(home, job)
    assert ledger_rows(home, "select count(*), count(distinct seq) from job_events") == [(len(events), len(events))]
    assert show(job)["attempts"][0]["outcome"] == "completed"


OOM_ON_BATCH_2 = textwrap.dedent(
    """
    # Makes the engine run out of memory at step 2 when batch_size is 2: the test's stand-in for a GPU OOM.
    import engine.training as training
    from transformers import TrainerCallback

    _build = training.build_trainer

    class _OOM(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            import torch
            if state.global_step == 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    def build_trainer(spec, *args, **kwargs):
        trainer, cancel = _build(spec, *args, **kwargs)
        if spec.hyperparameters.batch_size == 2:
            trainer.add_callback(_OOM())
        return trainer, cancel

    training.build_trainer = build_trainer
    """
)


def test_retry_suggested_after_out_of_memory_uses_the_suggested_values(home: Path, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(OOM_ON_BATCH_2)
    env = {"PYTHONPATH": f"{hooks}{os.pathsep}{ROOT}"}
    failed = lorapod(*smoke(), env=env)
    assert failed.returncode == 1
    assert "out_of_memory" in failed.stderr and "lorapod retry" in failed.stdout
    job = only_job()
    assert show(job)["error"]["suggested"] == {
        "batch_size": 1,
        "gradient_accumulation_steps": 2,
        "activation_checkpointing": True,
    }

    retried = lorapod("retry", job, "--suggested", "--yes", env=env)
    assert retried.returncode == 0, retried.stdout[-3000:] + retried.stderr[-3000:]
    assert "batch_size" in retried.stdout and "gradient_accumulation_steps" in retried.stdout  # the diff shown
    new = only_job()
    details = show(new)
    assert details["status"] == "completed"
    assert (details["hyperparameters"]["batch_size"], details["hyperparameters"]["gradient_accumulation_steps"]) == (
        1,
        2,
    )
    assert details["parent_job_id"] == show(job)["id"] and details["retry_count"] == 1


def test_the_budget_refuses_a_job_and_says_why(home: Path) -> None:
    import presets
    from store.db import Ledger
    from store.jobs import create_job, transition, update_job
    from store.status import JobStatus

    ledger = Ledger(home / "ledger.sqlite")
    spent = create_job(ledger, presets.get("balanced").to_spec("d.json"))
    transition(ledger, spent.id, JobStatus.TRAINING)
    transition(ledger, spent.id, JobStatus.COMPLETED)
    update_job(ledger, spent.id, actual_cost_usd=420.0)
    refused = lorapod(*smoke())
    assert refused.returncode == 1
    assert "refused by the budget" in refused.stderr and "monthly budget of $400.00" in refused.stderr
    assert "--force" in refused.stderr
    assert json.loads(lorapod("jobs", "--json").stdout)["total"] == 1  # nothing was queued


def test_the_hard_cap_cancels_a_running_job_with_its_reason(home: Path) -> None:
    env = {"LORAPOD_LOCAL_RATE_USD_PER_HOUR": "36000", "LORAPOD_HARD_CAP_USD": "15"}
    result = lorapod(*smoke(), env=env)
    assert result.returncode == 1
    job = only_job()
    details = show(job)
    assert details["status"] == "cancelled"
    assert details["cost"]["actual_usd"] >= 15
    stage = [e for e in workdir_events(home, job) if e["type"] == "stage"][-1]
    assert "hard cap" in stage["message"]
    alerts = ledger_rows(home, "select kind, message from alerts")
    assert any(kind == "limit_cost" and "hard cap" in message for kind, message in alerts)


def test_a_killed_rank_of_a_two_rank_job_makes_it_interrupted_and_resume_completes_it(home: Path) -> None:
    assert lorapod(*smoke("--detach", "--set", "gpu_count=2")).returncode == 0
    job = only_job()
    wait_for(lambda: any(e["type"] == "checkpoint" for e in workdir_events(home, job)), timeout=240)
    (workdir,) = (home / "jobs").glob(f"{job}*")
    os.kill(int((workdir / "control" / "rank-1.pid").read_text()), signal.SIGKILL)
    watched = lorapod("watch", job)
    assert watched.returncode == 1
    assert "interrupted" in watched.stdout
    assert show(job)["status"] == "interrupted"

    resumed = lorapod("resume", job)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    details = show(job)
    assert details["status"] == "completed"
    assert [a["outcome"] for a in details["attempts"]] == ["interrupted", "completed"]
    training = [e for e in workdir_events(home, job) if e["type"] == "stage" and e["stage"] == "training"]
    assert [e["world_size"] for e in training] == [2, 2]

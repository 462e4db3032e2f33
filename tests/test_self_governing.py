"""Jobs that govern themselves: limits, recovery and the cost they record, with nothing of the user's running."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.engine_helpers import wait_for
from tests.test_local_runs import final_loss, home, lorapod, only_job, show, smoke, workdir_events

pytestmark = pytest.mark.slow
__all__ = ["home"]  # the fixture, shared with the local-run tests


def _supervisor_pid(home: Path) -> int | None:
    from remote.daemon import status
    from store.settings import resolve_paths

    return status(resolve_paths({"LORAPOD_HOME": str(home)})).pid


def _kill_supervisor(home: Path) -> None:
    """Nothing of lorapod's keeps running on the user's side: the background supervisor is killed outright."""
    pid = _supervisor_pid(home)
    if pid:
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _supervisor_pid(home) is None, timeout=10)


def _workdir(home: Path, job: str) -> Path:
    (workdir,) = (home / "jobs").glob(f"{job}*")
    return workdir


def _terminal(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    ends = [e for e in events if e["type"] == "stage" and e["stage"] in ("completed", "failed", "cancelled")]
    return ends[-1] if ends else None


SLOW_STEPS = textwrap.dedent(
    """
    # Each training step takes half a second more: the demo job then trains for longer than its limit allows.
    import time

    import engine.training as training
    from transformers import TrainerCallback

    _build = training.build_trainer

    class _Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(0.5)

    def build_trainer(spec, *args, **kwargs):
        trainer, cancel = _build(spec, *args, **kwargs)
        trainer.add_callback(_Slow())
        return trainer, cancel

    training.build_trainer = build_trainer
    """
)


def test_a_detached_job_stops_itself_at_its_cost_limit_with_a_checkpoint(home: Path, tmp_path: Path) -> None:
    rate, cap = 7200.0, 30.0  # $2 a second: the limit falls 15 s into the engine's life, mid-training
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_STEPS)
    env = {"LORAPOD_LOCAL_RATE_USD_PER_HOUR": f"{rate:g}", "PYTHONPATH": f"{hooks}{os.pathsep}{ROOT}"}
    launched = lorapod(*smoke("--detach", "--set", f"max_cost_usd={cap:g}"), env=env)
    assert launched.returncode == 0, launched.stderr
    job = only_job()
    _kill_supervisor(home)
    # From here on the test reads only the job's workdir.
    wait_for(lambda: _terminal(workdir_events(home, job)) is not None, timeout=300)
    events = workdir_events(home, job)
    end = _terminal(events)
    assert end is not None and end["stage"] == "cancelled" and end["limit"] == "cost"
    assert "the job's max_cost_usd" in end["message"] and "$30.00" in end["message"]
    assert "$7,200.00/h" in end["message"]
    costs = [e for e in events if e["type"] == "cost"]
    assert costs and costs[-1]["seq"] == end["seq"] - 1  # the cost it ran up, then its last word
    assert costs[-1]["cost_usd"] >= cap
    trained = [e for e in events if e["type"] == "metrics" and e.get("loss") is not None]
    if trained:  # stopped mid-training: one step finished, then a checkpoint of it
        checkpoints = [e for e in events if e["type"] == "checkpoint"]
        assert checkpoints and checkpoints[-1]["reason"] == "cancel"
        assert checkpoints[-1]["step"] >= trained[-1]["step"]
        assert list((_workdir(home, job) / "checkpoints").glob("checkpoint-*"))
    # Stopped within one step (and one heartbeat tick) of crossing: not minutes of cost later.
    overshoot_s = (costs[-1]["cost_usd"] - cap) / rate * 3600
    assert overshoot_s < 10, f"stopped {overshoot_s:.1f} s after crossing the limit"


def test_auto_resume_after_kill_9_completes_with_the_uninterrupted_loss(home: Path) -> None:
    assert lorapod(*smoke("--name", "reference")).returncode == 0
    expected = final_loss(home, only_job())

    env = {"LORAPOD_AUTO_RESUME": "true"}
    assert lorapod(*smoke("--detach", "--name", "killed"), env=env).returncode == 0
    job = only_job()
    wait_for(
        lambda: (
            any(e["type"] == "checkpoint" for e in workdir_events(home, job))
            and any(e["type"] == "metrics" and e["step"] >= 12 for e in workdir_events(home, job))
        ),
        timeout=180,
    )
    os.kill(int((_workdir(home, job) / "engine.pid").read_text()), signal.SIGKILL)
    # No command is typed: the background supervisor notices, resumes and follows to the end.
    wait_for(lambda: (_terminal(workdir_events(home, job)) or {}).get("stage") == "completed", timeout=300)
    wait_for(lambda: show(job)["status"] == "completed", timeout=60)
    details = show(job)
    assert [a["outcome"] for a in details["attempts"]] == ["interrupted", "completed"]
    assert final_loss(home, job) == expected  # bit-identical on CPU


def test_the_recorded_cost_is_the_rate_times_the_engines_own_wall_time(home: Path) -> None:
    rate = 36.0
    env = {"LORAPOD_LOCAL_RATE_USD_PER_HOUR": f"{rate:g}"}
    assert lorapod(*smoke("--detach"), env=env).returncode == 0
    job = only_job()
    _kill_supervisor(home)
    wait_for(lambda: _terminal(workdir_events(home, job)) is not None, timeout=300)
    time.sleep(8)  # the ledger hears of it late
    details = show(job)  # catches up now
    assert details["status"] == "completed"
    events = workdir_events(home, job)
    engine_cost = [e for e in events if e["type"] == "cost"][-1]
    wall_s = float(engine_cost["elapsed"])
    attempt = details["attempts"][-1]
    started = datetime.fromisoformat(attempt["started_at"])
    first = datetime.fromisoformat(events[0]["ts"])
    assert (first - started).total_seconds() < wall_s  # the engine's clock starts with its process
    expected = rate * wall_s / 3600
    assert details["cost"]["actual_usd"] == pytest.approx(expected, rel=0.01)
    # Not the time until the ledger heard: that would be 8 s (and more) dearer.
    assert details["cost"]["actual_usd"] < rate * (wall_s + 8) / 3600 * 0.99


def test_manual_resume_keeps_to_the_budget(home: Path) -> None:
    from store.db import Ledger
    from store.jobs import get_job, update_job

    env = {"LORAPOD_AUTO_RESUME": "false"}
    assert lorapod(*smoke("--detach"), env=env).returncode == 0
    job = only_job()
    wait_for(lambda: any(e["type"] == "checkpoint" for e in workdir_events(home, job)), timeout=180)
    os.kill(int((_workdir(home, job) / "engine.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: show(job)["status"] == "interrupted", timeout=60)
    ledger = Ledger(home / "ledger.sqlite")
    row = get_job(ledger, job)
    update_job(ledger, row.id, estimated_cost_usd=500.0)  # more than the month has left
    refused = lorapod("resume", job, "--detach")
    assert refused.returncode == 1 and "refused by the budget" in refused.stderr
    assert "monthly budget" in refused.stderr
    assert show(job)["status"] == "interrupted"
    forced = lorapod("resume", job, "--detach", "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(lorapod("show", job, "--json").stdout)["attempts"][-1]["number"] == 2
    assert lorapod("cancel", job, "--yes").returncode == 0

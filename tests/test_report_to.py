"""report_to: the trainer's logs also go to TensorBoard (or W&B), and lorapod's event stream stays the same."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from engine import SpecError
from engine.speed import check_machine
from engine.training import logger_environment, sft_config
from engine.workdir import Workdir
from tests.engine_helpers import SAMPLE, events, of_type, run_engine, tiny_spec, write_spec

SHORT = ("num_epochs=1", "eval_generations=0", "save_steps=100")


def test_report_to_reaches_the_trainer_and_never_changes_the_training_hash(demo_model: Path, tmp_path: Path) -> None:
    plain = tiny_spec(demo_model, SAMPLE)
    logged = tiny_spec(demo_model, SAMPLE, "report_to=tensorboard")
    assert plain.training_hash() == logged.training_hash()  # a job resumes whatever its logs go to
    assert sft_config(plain, Workdir(tmp_path), has_eval=True, use_cpu=True).report_to == []
    assert sft_config(logged, Workdir(tmp_path), has_eval=True, use_cpu=True).report_to == ["tensorboard"]
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # only the engine's own process is pointed at its workdir
    assert logger_environment(logged, Workdir(tmp_path)) == {"TENSORBOARD_LOGGING_DIR": str(tmp_path / "tensorboard")}
    # W&B (not installed here: the trainer's callback needs it, the arguments do not) gets the job's name and a
    # folder in its workdir.
    wandb = tiny_spec(demo_model, SAMPLE, "report_to=wandb", "name=client-a")
    assert sft_config(wandb, Workdir(tmp_path), has_eval=True, use_cpu=True).report_to == ["wandb"]
    assert logger_environment(wandb, Workdir(tmp_path)) == {
        "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "lorapod", "WANDB_NAME": "client-a",
    }  # fmt: skip


def test_report_to_a_logger_that_is_not_installed_is_refused_by_name(
    demo_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SpecError, match=r"report_to: wandb needs the wandb package .*pip install wandb"):
        check_machine(tiny_spec(demo_model, SAMPLE, "report_to=wandb").hyperparameters, cuda=False)


@pytest.mark.slow
def test_tensorboard_gets_the_losses_the_events_carry(demo_model: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir = tmp_path / "job"
    spec = write_spec(tiny_spec(demo_model, SAMPLE, *SHORT, "report_to=tensorboard"), tmp_path / "spec.json")
    result = run_engine(spec, workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    logs = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert logs, sorted(p.name for p in workdir.iterdir())
    board = EventAccumulator(str(logs[0].parent))
    board.Reload()
    tensorboard_losses = {s.step: s.value for s in board.Scalars("train/loss")}
    stream = events(workdir)
    event_losses = {e["step"]: e["loss"] for e in of_type(stream, "metrics") if e.get("loss") is not None}
    assert tensorboard_losses.keys() == event_losses.keys()
    assert all(abs(tensorboard_losses[s] - event_losses[s]) < 1e-4 for s in event_losses)
    # The event stream is the one a job without report_to writes: nothing added, nothing missing.
    assert {e["type"] for e in stream} <= {"stage", "dataset", "metrics", "status", "checkpoint", "log", "warning",
                                            "eval", "artifact", "heartbeat", "cost"}  # fmt: skip
    assert of_type(stream, "stage")[-1]["stage"] == "completed"
    with zipfile.ZipFile(next((workdir / "packages").glob("*-full.zip"))) as archive:
        assert f"tensorboard/{logs[0].name}" in archive.namelist()  # the logs travel with the full package

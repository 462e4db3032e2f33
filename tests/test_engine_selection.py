"""The packaged checkpoint: the lowest held-out loss, chosen from scripted eval losses; early stopping with a
patience; the overfitting warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerControl, TrainerState, TrainingArguments

from engine.events import WarningEvent
from engine.selection import SelectionCallback, best_checkpoint, overfitting_streak


class Script:
    """A training run reduced to what the callback sees: steps, train losses, evaluations and saves."""

    def __init__(self, folder: Path, *, patience: int | None = None, overfitting_evals: int = 3) -> None:
        self.folder = folder
        self.args = TrainingArguments(output_dir=str(folder), eval_strategy="steps", eval_steps=2, report_to=[])
        self.state = TrainerState(max_steps=100)
        self.events: list[Any] = []
        self.marked = 0
        self.callback = SelectionCallback(
            self.events.append, patience=patience, overfitting_evals=overfitting_evals, mark_best=self._mark
        )
        self.saved: list[int] = []
        self.stopped_at: int | None = None

    def _mark(self) -> None:
        self.marked += 1

    def run(self, losses: list[tuple[float, float]], save_every: int = 0) -> None:
        """Two steps per evaluation: each (train loss, eval loss) logged as the trainer logs them."""
        for train, evaluated in losses:
            for _ in range(2):
                self.state.global_step += 1
                self.state.log_history.append({"step": self.state.global_step, "loss": train})
            control = TrainerControl()
            if save_every and self.state.global_step % save_every == 0:
                control.should_save = True
            self.state.log_history.append({"step": self.state.global_step, "eval_loss": evaluated})
            self.callback.on_evaluate(self.args, self.state, control, metrics={"eval_loss": evaluated})
            if control.should_save:
                (self.folder / f"checkpoint-{self.state.global_step}").mkdir()
                self.saved.append(self.state.global_step)
            if control.should_training_stop:
                self.stopped_at = self.state.global_step
                return


def test_the_lowest_eval_loss_is_saved_when_it_happens_and_chosen(tmp_path: Path) -> None:
    script = Script(tmp_path)
    script.run([(2.0, 1.9), (1.8, 1.6), (1.6, 1.2), (1.4, 1.3), (1.2, 1.25), (1.0, 1.4)], save_every=8)
    # Each new lowest (steps 2, 4, 6) is saved at once; step 8 by the usual schedule.
    assert script.saved == [2, 4, 6, 8] and script.marked == 3
    assert script.state.best_model_checkpoint == str(tmp_path / "checkpoint-6")  # kept from rotation
    best = best_checkpoint(script.state.log_history, tmp_path)
    assert best is not None and best.to_dict() == {"step": 6, "eval_loss": 1.2}
    assert best.path == tmp_path / "checkpoint-6"


def test_a_best_step_whose_checkpoint_is_gone_is_passed_over(tmp_path: Path) -> None:
    history = [{"step": 2, "eval_loss": 1.5}, {"step": 4, "eval_loss": 1.1}, {"step": 6, "eval_loss": 1.3}]
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-6").mkdir()
    best = best_checkpoint(history, tmp_path)
    assert best is not None and (best.step, best.eval_loss) == (6, 1.3)
    assert best_checkpoint([{"step": 2, "loss": 1.0}], tmp_path) is None  # never evaluated


def test_early_stopping_waits_for_its_patience(tmp_path: Path) -> None:
    script = Script(tmp_path, patience=2)
    script.run([(2.0, 1.5), (1.8, 1.4), (1.6, 1.45), (1.5, 1.41), (1.4, 1.2)])
    assert script.stopped_at == 8  # two evaluations (6 and 8) without beating step 4's 1.4
    assert script.saved[-1] == 8  # the stop saves, and step 4's checkpoint stays the best
    assert any("stopping early at step 8" in getattr(e, "message", "") for e in script.events)
    best = best_checkpoint(script.state.log_history, tmp_path)
    assert best is not None and best.step == 4

    patient = Script(tmp_path / "none")
    patient.folder.mkdir()
    patient.run([(2.0, 1.5), (1.8, 1.4), (1.6, 1.45), (1.5, 1.41), (1.4, 1.2)])
    assert patient.stopped_at is None  # no patience: every epoch is trained


def test_overfitting_is_warned_once_per_streak(tmp_path: Path) -> None:
    script = Script(tmp_path, overfitting_evals=3)
    script.run([(2.0, 1.5), (1.8, 1.3), (1.6, 1.35), (1.4, 1.4)])
    assert not script.events  # two rises: not yet
    script.run([(1.2, 1.5), (1.0, 1.6)])
    warnings = [e for e in script.events if isinstance(e, WarningEvent)]
    assert len(warnings) == 1 and warnings[0].code == "overfitting"
    details = warnings[0].details
    assert details["steps"] == [4, 6, 8, 10] and details["eval_losses"] == [1.3, 1.35, 1.4, 1.5]
    assert details["train_loss_from"] == 1.8 and details["train_loss_to"] == 1.2
    assert "overfitting" in warnings[0].message
    script.run([(0.9, 1.1), (0.8, 1.2), (0.7, 1.3), (0.6, 1.4)])  # the streak broke, then a new one
    assert len([e for e in script.events if isinstance(e, WarningEvent)]) == 2


def test_rising_eval_loss_with_rising_train_loss_is_not_overfitting() -> None:
    evals = [(2, 1.0), (4, 1.1), (6, 1.2), (8, 1.3)]
    rising = [(1, 1.0), (2, 1.0), (3, 1.1), (4, 1.1), (5, 1.2), (6, 1.2), (7, 1.3), (8, 1.3)]
    assert overfitting_streak(evals, rising, 3) is None
    falling = [(s, 2.0 - s / 10) for s in range(1, 9)]
    assert overfitting_streak(evals, falling, 3) is not None
    assert overfitting_streak(evals, falling, 4) is None  # only three rises

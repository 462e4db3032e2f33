"""Which checkpoint becomes the adapter: the one with the lowest held-out loss, kept on disk, found after training,
with optional early stopping and a warning when the eval loss rises while the train loss falls (overfitting).

The trainer evaluates every ``eval_every_steps`` and at the last step. A new lowest eval loss is saved at once (so
its weights exist) and protected from checkpoint rotation; the trainer state's log history, which a resumed run
restores, says which step it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from engine.events import LogEvent, WarningEvent

if TYPE_CHECKING:
    from peft import PeftModel

Emit = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class BestCheckpoint:
    step: int
    eval_loss: float
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "eval_loss": self.eval_loss}


def eval_history(log_history: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, eval loss) of every evaluation, in order, the last one kept where a step was evaluated twice."""
    losses: dict[int, float] = {}
    for entry in log_history:
        loss = entry.get("eval_loss")
        if isinstance(loss, int | float) and math.isfinite(loss):
            losses[int(entry["step"])] = float(loss)
    return sorted(losses.items())


def train_losses(log_history: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e["loss"])) for e in log_history if isinstance(e.get("loss"), int | float)]


def best_checkpoint(log_history: Sequence[dict[str, Any]], checkpoints: Path) -> BestCheckpoint | None:
    """The evaluated step with the lowest eval loss among those whose checkpoint is on disk (the earliest on a tie)."""
    best: BestCheckpoint | None = None
    for step, loss in eval_history(log_history):
        path = checkpoints / f"checkpoint-{step}"
        if path.is_dir() and (best is None or loss < best.eval_loss):
            best = BestCheckpoint(step, loss, path)
    return best


def load_adapter_weights(model: PeftModel, checkpoint: Path) -> None:
    """Put a checkpoint's adapter weights into ``model`` in place (the base weights are untouched)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))


def overfitting_streak(
    evals: Sequence[tuple[int, float]], trains: Sequence[tuple[int, float]], evaluations: int
) -> dict[str, Any] | None:
    """The last ``evaluations`` eval losses each above the one before, while the mean train loss between them
    fell from the first interval to the last: the details of that streak, else None."""
    if len(evals) < evaluations + 1:
        return None
    streak = list(evals[-(evaluations + 1) :])
    if any(b[1] <= a[1] for a, b in pairwise(streak)):
        return None

    def mean_train(after: int, upto: int) -> float | None:
        losses = [loss for step, loss in trains if after < step <= upto]
        return sum(losses) / len(losses) if losses else None

    before = [s for s, _ in evals[: -(evaluations + 1)]]
    first = mean_train(before[-1] if before else -1, streak[0][0])
    last = mean_train(streak[-2][0], streak[-1][0])
    if first is None or last is None or last >= first:
        return None
    return {
        "steps": [s for s, _ in streak],
        "eval_losses": [round(loss, 6) for _, loss in streak],
        "train_loss_from": round(first, 6),
        "train_loss_to": round(last, 6),
    }


class SelectionCallback(TrainerCallback):
    """Evaluates at the last step, saves each new lowest eval loss, stops early after ``patience`` evaluations
    without one, and warns once per streak of ``overfitting_evals`` rising eval losses under a falling train loss."""

    def __init__(
        self, emit: Emit, *, patience: int | None, overfitting_evals: int, mark_best: Callable[[], None]
    ) -> None:
        self.emit = emit
        self.patience = patience
        self.overfitting_evals = overfitting_evals
        self.mark_best = mark_best  # tells the checkpoint callback why this save happens
        self.warned = False

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if state.global_step >= state.max_steps and args.eval_strategy != "no":
            control.should_evaluate = True

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        loss = (metrics or {}).get("eval_loss")
        if loss is None or not math.isfinite(loss):
            return
        history = [*state.log_history, {"step": state.global_step, "eval_loss": loss}]
        evals = eval_history(history)
        earlier = [value for step, value in evals if step < state.global_step]
        if not earlier or loss < min(earlier):
            if not control.should_save:
                self.mark_best()
            control.should_save = True
            state.best_metric = loss
            # Checkpoint rotation keeps the checkpoint the state names as best.
            state.best_model_checkpoint = str(Path(args.output_dir or ".") / f"checkpoint-{state.global_step}")
        elif self.patience is not None:
            best_step = min(evals, key=lambda e: e[1])[0]
            since = sum(1 for step, _ in evals if step > best_step)
            if since >= self.patience and not control.should_training_stop:
                control.should_training_stop = True
                control.should_save = True
                best_loss = min(value for _, value in evals)
                self.emit(
                    LogEvent(
                        message=(
                            f"stopping early at step {state.global_step}: {since} evaluations without beating step "
                            f"{best_step}'s eval loss {best_loss:.4f} (early_stopping_patience {self.patience})"
                        )
                    )
                )
        self._check_overfitting(evals, train_losses(state.log_history))

    def _check_overfitting(self, evals: list[tuple[int, float]], trains: list[tuple[int, float]]) -> None:
        streak = overfitting_streak(evals, trains, self.overfitting_evals)
        if streak is None:
            self.warned = False
            return
        if self.warned:
            return
        self.warned = True
        self.emit(
            WarningEvent(
                code="overfitting",
                message=(
                    f"eval loss rose {self.overfitting_evals} evaluations in a row (steps {streak['steps'][0]}–"
                    f"{streak['steps'][-1]}: {streak['eval_losses'][0]:.4f} → {streak['eval_losses'][-1]:.4f}) "
                    f"while train loss fell ({streak['train_loss_from']:.4f} → {streak['train_loss_to']:.4f}): "
                    "the adapter is overfitting; the checkpoint with the lowest eval loss is the one packaged"
                ),
                details=streak,
            )
        )

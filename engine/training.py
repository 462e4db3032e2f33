"""The training stage: TRL's SFTTrainer on pre-tokenized, packed examples, reporting through events.

Callbacks turn the trainer's state into events (metrics, status, checkpoints), checkpoint every N steps and
every M minutes (whichever first, at least once per epoch, and at the last step), stop gracefully on a
cancel request, and fail fast on a non-finite loss.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from engine import SpecError, distributed
from engine.config import JobSpec
from engine.events import CheckpointEvent, MetricsEvent, StatusEvent, WarningEvent
from engine.failures import NonFiniteLoss
from engine.memory import choose_parallelism
from engine.speed import flattens_rows, optimizer
from engine.workdir import Workdir

if TYPE_CHECKING:
    from datasets import Dataset
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase
    from trl import SFTTrainer

log = logging.getLogger(__name__)
Emit = Callable[[Any], Any]


def sft_config(spec: JobSpec, workdir: Workdir, *, has_eval: bool, use_cpu: bool) -> Any:
    """TRL's SFTConfig for a spec: assistant-only loss (labels come pre-masked), packing, checkpoints, and the
    speed settings (engine.speed): packed rows of max_seq_length tokens, batch_size of them per micro-step."""
    from trl import SFTConfig

    hp = spec.hyperparameters
    ranks = distributed.world_size()
    return SFTConfig(
        output_dir=str(workdir.checkpoints),
        seed=hp.seed,
        data_seed=hp.seed,
        num_train_epochs=hp.num_epochs,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        learning_rate=hp.learning_rate,
        lr_scheduler_type=hp.lr_scheduler_type,
        warmup_steps=hp.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        optim=optimizer(hp, cuda=not use_cpu),
        bf16=hp.bf16,
        use_cpu=use_cpu,
        max_length=hp.max_seq_length,
        packing=hp.packing,
        activation_checkpointing=hp.activation_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if hp.activation_checkpointing else None,
        # TRL computes the loss in chunks without the full logits whatever this says; Liger adds its layer kernels.
        use_liger_kernel=hp.liger_kernel,
        torch_compile=hp.torch_compile,
        logging_strategy="steps",
        logging_steps=hp.log_every_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=hp.save_steps,
        save_total_limit=hp.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=hp.eval_every_steps if has_eval else None,
        report_to=[] if hp.report_to == "none" else [hp.report_to],  # the event stream is the same either way
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        remove_unused_columns=True,
        # Several ranks: the gradients of LoRA's weights alone are reduced, and every one of them has one.
        ddp_backend="gloo" if use_cpu and ranks > 1 else None,
        ddp_find_unused_parameters=False if ranks > 1 else None,
        **fsdp_settings(spec, ranks, cuda=not use_cpu),
    )


def logger_environment(spec: JobSpec, workdir: Workdir) -> dict[str, str]:
    """Where report_to's logger writes: under the job's workdir. transformers reads these places from the
    environment only, so the engine sets them for its own process (build_trainer); a value already set wins."""
    target = spec.hyperparameters.report_to
    if target == "tensorboard":
        return {"TENSORBOARD_LOGGING_DIR": str(workdir.tensorboard)}
    if target == "wandb":
        return {
            "WANDB_DIR": str(workdir.root),
            "WANDB_PROJECT": "lorapod",
            "WANDB_NAME": spec.name or spec.job_id or "lorapod",
        }
    return {}


def parallelism(spec: JobSpec, ranks: int, *, cuda: bool) -> str | None:
    """How several ranks share a job: ``ddp`` (each holds the whole 4-bit model) or ``fsdp`` (each a shard)."""
    return parallelism_choice(spec, ranks, cuda=cuda)[0]


def parallelism_choice(spec: JobSpec, ranks: int, *, cuda: bool) -> tuple[str | None, str]:
    """``parallelism`` and why: set in the spec, or ``auto``'s choice from the memory estimate (engine.memory)
    against this machine's GPU."""
    if ranks <= 1:
        return None, "one rank"
    if spec.resources.parallelism == "fsdp" and not cuda:
        # accelerate (1.15) turns FSDP on for accelerator processes only (AcceleratorState: MULTI_GPU, MULTI_XPU,
        # ...; CPU ranks stay MULTI_CPU): it drops the FSDP plugin and the Trainer wraps the model in
        # DistributedDataParallel, unsharded, without a word. torch's own fully_shard does run on gloo CPU ranks,
        # but sharding here, before the Trainer, would be a CPU-only path beside accelerate's, testing nothing of it.
        raise SpecError(
            "parallelism=fsdp: FSDP shards the model across GPUs, and this machine has none (accelerate runs CPU "
            "ranks as plain data parallel); set parallelism=ddp or auto"
        )
    return choose_parallelism(spec, ranks, _gpu_memory_total_gb() if cuda else None)


def _gpu_memory_total_gb() -> float:
    import torch

    # Too few GPUs for the ranks is refused by name when they join (distributed.init), not here.
    index = min(distributed.local_rank(), max(torch.cuda.device_count() - 1, 0))
    return torch.cuda.get_device_properties(index).total_memory / 1e9


def fsdp_settings(spec: JobSpec, ranks: int, *, cuda: bool) -> dict[str, Any]:
    """The Trainer's FSDP arguments for FSDP-QLoRA: each decoder layer a shard, the 4-bit weights stored in the
    compute dtype (engine.model) so FSDP can flatten them with the rest."""
    if parallelism(spec, ranks, cuda=cuda) != "fsdp":
        return {}
    # FSDP2 (per-parameter sharding): LoRA's trainable weights sit beside frozen ones in each shard as they are.
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
            "reshard_after_forward": True,
            "state_dict_type": "FULL_STATE_DICT",  # checkpoints and the adapter stay whole, as one rank saves them
        },
    }


@dataclass
class Progress:
    """What the callbacks know about the run, shared with the runner (for heartbeats and ETA)."""

    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    started: float = 0.0
    resumed_from_step: int = 0
    num_tokens: float = 0.0

    def eta(self, now: float) -> float | None:
        done = self.step - self.resumed_from_step
        if done <= 0 or self.total_steps <= 0:
            return None
        return (now - self.started) / done * max(self.total_steps - self.step, 0)


def _gpu_memory_gb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 1e9, 2)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


class EventsCallback(TrainerCallback):
    """Metrics every logging step, a status line every ``status_every_steps``, NaN detection."""

    def __init__(self, spec: JobSpec, emit: Emit, progress: Progress) -> None:
        self.spec = spec
        self.emit = emit
        self.progress = progress
        self._last_tokens: tuple[float, float] | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.progress.started = time.monotonic()
        self.progress.resumed_from_step = state.global_step
        self.progress.total_steps = state.max_steps

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        logs = logs or {}
        if "train_runtime" in logs:  # the trainer's closing summary, not a step
            return
        now = time.monotonic()
        progress = self.progress
        progress.step, progress.epoch = state.global_step, float(state.epoch or 0.0)
        loss = logs.get("loss")
        if loss is not None:
            if not math.isfinite(loss):
                raise NonFiniteLoss(state.global_step, loss)
            progress.loss = loss
        # Every rank logs the same step: each one's peak memory is gathered before rank 0 writes the event.
        memory = distributed.gather(_gpu_memory_gb())
        known = [m for m in memory if m is not None]
        tokens_per_second = None
        if "num_tokens" in logs:
            progress.num_tokens = logs["num_tokens"]
            if self._last_tokens is not None and now > self._last_tokens[1]:
                tokens_per_second = (logs["num_tokens"] - self._last_tokens[0]) / (now - self._last_tokens[1])
            self._last_tokens = (logs["num_tokens"], now)
        self.emit(
            MetricsEvent(
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=round(progress.epoch, 4),
                loss=loss,
                eval_loss=logs.get("eval_loss"),
                learning_rate=logs.get("learning_rate"),
                grad_norm=logs.get("grad_norm"),
                tokens_per_second=round(tokens_per_second, 1) if tokens_per_second else None,
                gpu_memory_gb=max(known) if known else None,
                gpu_memory_gb_per_rank=memory if len(memory) > 1 else None,
                elapsed=round(now - progress.started, 2),
                eta=progress.eta(now),
            )
        )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        progress = self.progress
        progress.step, progress.epoch = state.global_step, float(state.epoch or 0.0)
        every = self.spec.hyperparameters.status_every_steps
        if state.global_step % every == 0 or state.global_step == state.max_steps:
            self.emit(
                StatusEvent(
                    step=state.global_step,
                    total_steps=state.max_steps,
                    epoch=progress.epoch,
                    message=status_line(progress, self.spec),
                )
            )


def status_line(progress: Progress, spec: JobSpec) -> str:
    """ "Training: 450 / 1200 steps (37.5%) · epoch 1.5 / 3 · loss 1.234 · ETA 12m 30s"."""
    share = progress.step / progress.total_steps if progress.total_steps else 0.0
    loss = f" · loss {progress.loss:.4f}" if progress.loss is not None else ""
    eta = _fmt_duration(progress.eta(time.monotonic()))
    return (
        f"Training: {progress.step} / {progress.total_steps} steps ({share:.1%}) · epoch {progress.epoch:.2f} / "
        f"{spec.hyperparameters.num_epochs}{loss} · ETA {eta}"
    )


class CheckpointCallback(TrainerCallback):
    """Saves every M minutes as well as every N steps, once per epoch at least, and at the last step.

    Each checkpoint gets ``lorapod.json`` (spec hash, step, epoch, reason), so it describes itself.
    """

    def __init__(self, spec: JobSpec, emit: Emit) -> None:
        self.spec = spec
        self.emit = emit
        self.interval = spec.hyperparameters.save_every_minutes * 60
        self.last_save = time.monotonic()
        self.saved_this_epoch = False
        self.reason = "steps"

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.saved_this_epoch = False

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if state.global_step >= state.max_steps:
            control.should_save, self.reason = True, "final"
        elif control.should_save:
            self.reason = "steps"
        elif time.monotonic() - self.last_save >= self.interval:
            control.should_save, self.reason = True, "time"

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if not self.saved_this_epoch and not control.should_save:
            control.should_save, self.reason = True, "epoch"

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        path = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
        meta = {
            "step": state.global_step,
            "epoch": state.epoch,
            "reason": self.reason,
            "training_hash": self.spec.training_hash(),
            "saved_at": datetime.now(UTC).isoformat(),
            "spec": self.spec.model_dump(mode="json"),
        }
        if path.is_dir() and distributed.rank() == 0:
            (path / "lorapod.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        epoch = float(state.epoch or 0.0)
        self.emit(CheckpointEvent(step=state.global_step, epoch=epoch, path=str(path), reason=self.reason))
        self.last_save = time.monotonic()
        self.saved_this_epoch = True
        self.reason = "steps"


CHECKPOINT_REASONS = ("steps", "time", "epoch", "final", "cancel", "best")


class CancelCallback(TrainerCallback):
    """Stops after the current step with a checkpoint when ``should_stop()`` says so.

    With several ranks, rank 0's decisions (stop, save, and why) hold for every rank at every step: a rank that
    stopped or saved alone would leave the others waiting for it in the next collective."""

    def __init__(self, should_stop: Callable[[], str | None], checkpoints: CheckpointCallback) -> None:
        self.should_stop = should_stop
        self.checkpoints = checkpoints
        self.stopped: str | None = None

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        reason = self.should_stop()
        wants_stop = bool(reason) and state.global_step < state.max_steps
        why = CHECKPOINT_REASONS.index(self.checkpoints.reason)
        stop, save, why = distributed.agree([int(wants_stop), int(control.should_save), why])
        control.should_save, self.checkpoints.reason = bool(save), CHECKPOINT_REASONS[why]
        if stop:
            self.stopped = reason or "rank 0 stopped the job"
            control.should_save = True
            control.should_training_stop = True
            self.checkpoints.reason = "cancel"


def build_trainer(
    spec: JobSpec,
    workdir: Workdir,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Dataset,
    evaluation: Dataset | None,
    *,
    emit: Emit,
    progress: Progress,
    should_stop: Callable[[], str | None],
    use_cpu: bool,
) -> tuple[SFTTrainer, CancelCallback]:
    from transformers import PrinterCallback

    from engine.selection import SelectionCallback
    from engine.weighted_eval import TokenWeightedSFTTrainer

    hp = spec.hyperparameters
    args = sft_config(spec, workdir, has_eval=evaluation is not None, use_cpu=use_cpu)
    for name, value in logger_environment(spec, workdir).items():
        os.environ.setdefault(name, value)
    checkpoints = CheckpointCallback(spec, emit)
    cancel = CancelCallback(should_stop, checkpoints)
    selection = SelectionCallback(
        emit, patience=hp.early_stopping_patience, overfitting_evals=hp.overfitting_evals,
        mark_best=lambda: setattr(checkpoints, "reason", "best"),
    )  # fmt: skip
    rows_kept = spec.hyperparameters.packing and not flattens_rows(model.config._attn_implementation)
    trainer_class: type[TokenWeightedSFTTrainer] = TokenWeightedSFTTrainer
    if rows_kept:
        from engine.packed_rows import PackedRowsTrainer

        trainer_class = PackedRowsTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        # The selection callback runs before the metrics one, so the last step is evaluated (and logged) too.
        callbacks=[selection, EventsCallback(spec, emit, progress), checkpoints, cancel],
    )
    trainer.remove_callback(PrinterCallback)  # events carry the logs; no dicts on stdout
    if rows_kept:
        from engine.packed_rows import PackedRowsCollator

        # SFTTrainer takes no collator of its own beside packing (it would flatten the rows): set after it is built.
        trainer.data_collator = PackedRowsCollator(tokenizer.pad_token_id)
    return trainer, cancel


def warn_if_few_steps(spec: JobSpec, steps_per_epoch: int, emit: Emit) -> None:
    """Warn when an epoch has too few optimizer steps for warmup and the schedule to mean anything."""
    total = steps_per_epoch * spec.hyperparameters.num_epochs
    warmup = total * spec.hyperparameters.warmup_ratio
    if steps_per_epoch < 10 or (spec.hyperparameters.warmup_ratio > 0 and warmup < 1):
        emit(
            WarningEvent(
                code="few_steps",
                message=(
                    f"only {steps_per_epoch} optimizer steps per epoch ({total} in all, warmup {warmup:.1f} steps): "
                    "the learning-rate schedule barely acts; lower batch_size × gradient_accumulation_steps "
                    "or add data"
                ),
                details={"steps_per_epoch": steps_per_epoch, "total_steps": total, "warmup_steps": warmup},
            )
        )

"""Training speed on CPU: TRL's plain SFT setup, the engine's path, and each speed setting on and off, as seconds
per optimizer step and as ratios to the plain setup timed in the same run (the demo model, the sample data).

Every configuration is timed in each of ``ROUNDS`` rounds, in turn, so that a slow minute of a shared machine
falls on all of them alike; a figure is the median of its timed steps over all rounds (the first ``WARMUP``
steps of each run are not timed). A step is timed from the trainer's step begin to its step end: the forward
and backward passes of every micro-step, gradient clipping and the optimizer step, not logging or saving.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "brightrun-sample.json"
WARMUP = 2
TIMED = 6
ROUNDS = 3
COMPILE_WARMUP = 4  # torch.compile spends its first steps compiling (and recompiling for new shapes)
QLORA_TIMED = 3  # bitsandbytes' 4-bit CPU path is ten times slower per step: fewer steps keep the suite short
THREADS = 1  # one thread per process: on a machine shared with other work, two threads wait on each other

# The job's own choices, the same for the plain setup and the engine: only speed settings differ between them.
GEOMETRY = {"batch_size": 2, "gradient_accumulation_steps": 1, "max_seq_length": 512}
LORA = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "learning_rate": 5e-3}
# The engine's CPU path, as the smoke preset runs it: full precision, plain LoRA, no recomputation.
ENGINE = {"bf16": False, "load_in_4bit": False, "activation_checkpointing": False, "packing": True}
QLORA = {"load_in_4bit": True, "bf16": True}  # the engine's GPU recipe (NF4 weights, bf16 compute) on the CPU


@dataclass
class Config:
    """One timed configuration: the plain TRL setup (``overrides`` None) or the engine with these settings."""

    name: str
    overrides: dict[str, Any] | None
    warmup: int = WARMUP
    timed: int = TIMED
    seconds: list[float] = field(default_factory=list)
    tokens_per_step: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


CONFIGS = [
    Config("TRL SFTTrainer, default settings (baseline)", None),
    Config("engine path (smoke settings)", {}),
    Config("engine: attn_implementation=eager", {"attn_implementation": "eager"}),
    Config("engine: packing=false", {"packing": False}),
    Config("engine: activation_checkpointing=true", {"activation_checkpointing": True}),
    Config("engine: optimizer=adamw_torch_fused", {"optimizer": "adamw_torch_fused"}),
    Config("engine: bf16=true", {"bf16": True}),
    Config("engine: torch_compile=true", {"torch_compile": True}, warmup=COMPILE_WARMUP),
    Config("engine QLoRA: upcast_non_lora=true", {**QLORA, "upcast_non_lora": True}, timed=QLORA_TIMED),
    Config("engine QLoRA: upcast_non_lora=false", {**QLORA, "upcast_non_lora": False}, timed=QLORA_TIMED),
    Config(
        "engine QLoRA: micro-step 1 × 512, 4 accumulated",
        {**QLORA, "batch_size": 1, "gradient_accumulation_steps": 4},
        timed=QLORA_TIMED,
    ),
    Config(
        "engine QLoRA: micro-step 4 × 512, 1 accumulated",
        {**QLORA, "batch_size": 4, "gradient_accumulation_steps": 1},
        timed=QLORA_TIMED,
    ),
]


def _step_timer(config: Config) -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Times each optimizer step and stops the run after the warm-up and timed steps."""

        def __init__(self) -> None:
            self.started = 0.0
            self.steps = 0
            self.tokens = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            elapsed = time.perf_counter() - self.started
            self.steps += 1
            if self.steps > config.warmup:
                config.seconds.append(elapsed)
            if self.steps >= config.warmup + config.timed:
                control.should_training_stop = True

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if logs and "num_tokens" in logs:
                self.tokens = logs["num_tokens"]

    return StepTimer()


def _spec(model_dir: Path, overrides: dict[str, Any]) -> Any:
    import presets

    settings = {
        **GEOMETRY, **LORA, **ENGINE, **overrides, "base_model": model_dir, "eval_fraction": 0, "num_epochs": 100,
        "save_steps": 1_000_000, "save_every_minutes": 1440, "log_every_steps": 1, "status_every_steps": 100_000,
        "eval_generations": 0,
    }  # fmt: skip
    return presets.get("smoke").to_spec(str(SAMPLE), [f"{key}={value}" for key, value in settings.items()])


def _run_engine(config: Config, model_dir: Path, out: Path) -> None:
    """The engine's own stages: prepare (convert, tokenize), load (LoRA), the trainer it builds."""
    from engine.model import load_model, load_tokenizer
    from engine.prepare import prepare
    from engine.speed import check_machine
    from engine.training import Progress, build_trainer
    from engine.workdir import Workdir

    spec = _spec(model_dir, config.overrides or {})
    check_machine(spec.hyperparameters, cuda=False)
    workdir = Workdir(out)
    tokenizer = load_tokenizer(str(model_dir), None)
    prepared = prepare(spec, workdir, tokenizer)
    model = load_model(spec, str(model_dir), None)
    trainer, _ = build_trainer(
        spec, workdir, model, tokenizer, prepared.train, None,
        emit=lambda event: None, progress=Progress(), should_stop=lambda: None, use_cpu=True,
    )  # fmt: skip
    _train(trainer, config)


def _run_baseline(config: Config, model_dir: Path, rows: list[dict[str, Any]], out: Path) -> None:
    """What TRL's sft script does with a model, chat data and LoRA: every other setting at TRL's default."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=GEOMETRY["batch_size"],
        gradient_accumulation_steps=GEOMETRY["gradient_accumulation_steps"],
        max_length=GEOMETRY["max_seq_length"],
        learning_rate=LORA["learning_rate"],
        num_train_epochs=100,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,  # TRL's default bf16 refuses a machine without a GPU unless told it is a CPU run
    )
    lora = LoraConfig(
        r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"],
        target_modules="all-linear", task_type="CAUSAL_LM",
    )  # fmt: skip
    trainer = SFTTrainer(model=str(model_dir), args=args, train_dataset=Dataset.from_list(rows), peft_config=lora)
    _train(trainer, config)


def _train(trainer: Any, config: Config) -> None:
    from transformers import PrinterCallback

    timer = _step_timer(config)
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    config.tokens_per_step.append(timer.tokens / max(timer.steps, 1))


def _chat_rows(model_dir: Path, out: Path) -> list[dict[str, Any]]:
    """The engine's training examples as plain chat messages: the same conversations for the plain setup."""
    from engine.dataset import load_examples
    from engine.model import load_tokenizer
    from engine.prepare import prepare
    from engine.workdir import Workdir

    workdir = Workdir(out)
    prepare(_spec(model_dir, {}), workdir, load_tokenizer(str(model_dir), None))
    train, _, _ = load_examples(workdir.dataset)
    return [{"messages": [{"role": m["role"], "content": m["content"]} for m in e.messages]} for e in train]


def _refusals() -> str:
    """What the engine says on this machine to the settings it cannot run here."""
    from engine import SpecError
    from engine.config import Hyperparameters
    from engine.speed import check_machine

    try:
        check_machine(Hyperparameters(attn_implementation="flash_attention_2", liger_kernel=True), cuda=False)
    except SpecError as exc:
        return str(exc).replace("\n", " / ")
    return "none refused"


def measure() -> list[Config]:
    """Build the demo model, then time every configuration in ``ROUNDS`` interleaved rounds."""
    import logging

    import datasets
    import transformers

    from engine.demo import build_demo_model, dataset_chats, dataset_texts

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("engine").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(THREADS)
    configs = [Config(c.name, c.overrides, c.warmup, c.timed) for c in CONFIGS]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "tiny-llama"
        build_demo_model(model_dir, dataset_texts(SAMPLE), dataset_chats(SAMPLE))
        rows = _chat_rows(model_dir, Path(tmp) / "rows")
        for round_number in range(ROUNDS):
            start = round_number * len(configs) // ROUNDS  # each round in another order: no fixed neighbours
            for index, config in (list(enumerate(configs)) * 2)[start : start + len(configs)]:
                out = Path(tmp) / f"run-{round_number}-{index}"
                if config.overrides is None:
                    _run_baseline(config, model_dir, rows, out)
                else:
                    _run_engine(config, model_dir, out)
    return configs


def conditions() -> str:
    import torch

    versions = ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "trl", "peft", "bitsandbytes"))
    return (
        f"demo model (2 layers, hidden 64, vocab 4k) on the {len(_sample_conversations())} conversations of "
        f"samples/brightrun-sample.json, LoRA r8 α16 on all 7 projections, batch 2 × accumulation 1, max 512 "
        f"tokens; CPU {platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; "
        f"{versions}; median of {TIMED} timed steps ({QLORA_TIMED} for 4-bit) × {ROUNDS} interleaved rounds, after "
        f"{WARMUP} warm-up steps ({COMPILE_WARMUP} for torch.compile)"
    )


def _sample_conversations() -> list[Any]:
    import json

    return list(json.loads(SAMPLE.read_text(encoding="utf-8"))["conversations"])


def run() -> list[dict[str, Any]]:
    configs = measure()
    baseline, engine = configs[0], configs[1]
    common = conditions()
    results = []
    for config, role in ((baseline, "baseline"), (engine, "engine")):
        results.append(
            {
                "name": f"training s/step: {config.name}",
                "value": round(config.median, 4),
                "unit": "s/step (median)",
                "conditions": f"{role}; {statistics.fmean(config.tokens_per_step):.0f} tokens/step; {common}"
                + (f"; refused on this machine: {_refusals()}" if role == "engine" else ""),
            }
        )
    for config in configs[1:]:
        versus_engine = config.median / engine.median
        results.append(
            {
                "name": f"training vs baseline: {config.name}",
                "value": round(config.median / baseline.median, 3),
                "unit": "× baseline s/step",
                "conditions": (
                    f"{config.median:.4f} s/step, {statistics.fmean(config.tokens_per_step):.0f} tokens/step, "
                    f"{versus_engine:.3f}× the engine path; settings {config.overrides or 'the engine path'}"
                ),
            }
        )
    return results


if __name__ == "__main__":
    for result in run():
        print(f"{result['name']:<60} {result['value']:>10} {result['unit']}\n    {result['conditions']}")

"""Helpers for playground tests: a finished demo job's workdir (spec and adapter) made in seconds, not trained."""

from __future__ import annotations

from pathlib import Path

from engine.config import JobSpec
from engine.workdir import Workdir
from store.db import Ledger
from store.jobs import create_job, transition
from store.models import TrainingJob
from store.status import JobStatus
from tests.engine_helpers import tiny_spec, write_spec


def finished_workdir(root: Path, demo_model: Path, *, base_model: str | None = None) -> Workdir:
    """A workdir as a completed job leaves it: its spec and an adapter (random, so it answers unlike the base).

    ``base_model``: the name the spec records (default: the demo model's folder)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Workdir(root)
    root.mkdir(parents=True, exist_ok=True)
    spec = tiny_spec(demo_model)
    if base_model is not None:
        spec = spec.model_copy(update={"base_model": base_model})
    write_spec(spec, work.spec)
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(demo_model)
    lora = LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["q_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    get_peft_model(model, lora).save_pretrained(work.adapter)
    AutoTokenizer.from_pretrained(demo_model).save_pretrained(work.adapter)
    return work


def completed_job(ledger: Ledger, spec: JobSpec, workdir: str) -> TrainingJob:
    """``spec`` recorded as a job that has run to completion in ``workdir``."""
    job = create_job(ledger, spec)
    transition(ledger, job.id, JobStatus.TRAINING, workdir=workdir)
    return transition(ledger, job.id, JobStatus.COMPLETED)

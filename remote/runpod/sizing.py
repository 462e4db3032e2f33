"""What a job needs before a pod is rented: disk for the base model's weights and checkpoints, GPU memory.

Disk: the Hugging Face cache and the job's workdir live on /workspace (the network volume, else the pod's own
volume), so that volume must hold the bf16 download, the checkpoints kept, the packages and a margin. The
weight size comes from the Hub's file metadata when it can be read, else parameters × 2 bytes.

GPU memory: engine.memory's estimate, which the engine also uses to choose how several GPUs share a job; a
job that does not fit one GPU fits a pod of several when they shard it (FSDP).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from engine.config import JobSpec
from engine.memory import BF16_BYTES, GB, parameters_b, shape_for

log = logging.getLogger(__name__)

# Per LoRA parameter in a checkpoint: fp32 weights (4) and Adam's two moments (8).
CHECKPOINT_BYTES = 12.0
MARGIN_SHARE = 0.10
# The stock image's virtualenv (torch and the train stack), the dataset, logs and temporary files.
MARGIN_FIXED_GB = 15.0
HUB_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DiskNeed:
    weights_gb: float
    weights_source: str
    checkpoints_gb: float
    margin_gb: float

    @property
    def total_gb(self) -> int:
        return math.ceil(self.weights_gb + self.checkpoints_gb + self.margin_gb)


def hub_weights_bytes(repo_id: str) -> int | None:
    """The size of a Hub model's weight files, read from the Hub's metadata; None when it cannot be read."""
    if os.environ.get("HF_HUB_OFFLINE") or "/" not in repo_id or Path(repo_id).expanduser().exists():
        return None
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo_id, files_metadata=True, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # offline, gated, renamed: parameters × bytes stands in
        log.info("weight size of %s not read from the Hub (%s)", repo_id, type(exc).__name__)
        return None
    files = [(s.rfilename, s.size or 0) for s in info.siblings or []]
    for suffix in (".safetensors", ".bin"):
        sizes = [size for name, size in files if name.endswith(suffix) and "/" not in name]
        if sizes and all(sizes):
            return sum(sizes)
    return None


def disk_need(spec: JobSpec, *, hub: bool = True) -> DiskNeed:
    """What the pod's /workspace must hold for ``spec``."""
    params_b = parameters_b(spec)
    hub_bytes = hub_weights_bytes(spec.base_model) if hub else None
    if hub_bytes:
        weights, source = hub_bytes / GB, "the Hub's file metadata"
    elif params_b is not None:
        weights, source = params_b * BF16_BYTES, f"{params_b:g} B parameters × 2 bytes (bf16)"
    else:
        weights, source = 0.0, "unknown (a local or demo model: set model_size_b to size it)"
    checkpoints = 0.0
    if params_b is not None:
        hp = spec.hyperparameters
        lora = shape_for(params_b).lora_params(hp.lora_r, len(hp.target_modules))
        # The checkpoints kept, one being written, and the packaged adapter (bf16 weights, twice: zip and folder).
        checkpoints = lora * (CHECKPOINT_BYTES * (hp.save_total_limit + 1) + 2 * BF16_BYTES) / GB
    margin = (weights + checkpoints) * MARGIN_SHARE + MARGIN_FIXED_GB
    return DiskNeed(round(weights, 1), source, round(checkpoints, 1), round(margin, 1))


def memory_advice(spec: JobSpec) -> str:
    """What would make a job that does not fit fit."""
    hp = spec.hyperparameters
    steps = []
    if hp.batch_size > 1:
        half = hp.batch_size // 2
        steps.append(
            f"--set batch_size={half} --set gradient_accumulation_steps={hp.gradient_accumulation_steps * 2} "
            "(the same tokens per optimizer step)"
        )
    if not hp.activation_checkpointing:
        steps.append("--set activation_checkpointing=true")
    steps.append("a GPU with more memory first in gpu_types (NVIDIA H200: 141 GB)")
    return "; or ".join(steps)

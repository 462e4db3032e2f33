"""What a job needs before a pod is rented: disk for the base model's weights and checkpoints, GPU memory.

Disk: the Hugging Face cache and the job's workdir live on /workspace (the network volume, else the pod's own
volume), so that volume must hold the bf16 download, the checkpoints kept, the packages and a margin. The
weight size comes from the Hub's file metadata when it can be read, else parameters × 2 bytes.

GPU memory: NF4 weights, the LoRA weights with their gradients and Adam states, and the activations of one
micro-batch of ``batch_size × max_seq_length`` tokens (TRL packs it into one row). The model shape is the
nearest Llama-family shape by parameter count; the figures are an estimate that errs on the side of fitting.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from engine.config import JobSpec

log = logging.getLogger(__name__)

GB = 1e9
BF16_BYTES = 2.0
# NF4 with double quantization, the embeddings and lm_head kept in bf16: Llama-3-70B holds about 37-40 GB.
NF4_BYTES = 0.55
# Per LoRA parameter in a checkpoint: fp32 weights (4) and Adam's two moments (8).
CHECKPOINT_BYTES = 12.0
# Per LoRA parameter on the GPU: fp32 weights, gradients and Adam's two moments.
LORA_TRAIN_BYTES = 16.0
CUDA_RESERVE_GB = 2.5  # the CUDA context, cuBLAS workspaces and the allocator's fragmentation
USABLE_SHARE = 0.95  # the driver never hands a process the whole card
MARGIN_SHARE = 0.10
# The stock image's virtualenv (torch and the train stack), the dataset, logs and temporary files.
MARGIN_FIXED_GB = 15.0
HUB_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Shape:
    """A Llama-family decoder: what the activation and LoRA estimates need."""

    params_b: float
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    kv_share: float = 0.125  # grouped-query attention: 8 key/value heads of 64

    def lora_params(self, rank: int, modules: int) -> float:
        """LoRA parameters with ``rank`` on ``modules`` of the seven projections (all of them counted at
        their largest when fewer are targeted)."""
        h, i, kv = self.hidden, self.intermediate, self.hidden * self.kv_share
        sizes = sorted([2 * h, 2 * h, h + kv, h + kv, h + i, h + i, h + i], reverse=True)
        return float(rank * sum(sizes[: max(1, min(modules, 7))]) * self.layers)


SHAPES = (
    Shape(1.24, 16, 2048, 8192, 128256),
    Shape(3.21, 28, 3072, 8192, 128256),
    Shape(8.03, 32, 4096, 14336, 128256),
    Shape(70.6, 80, 8192, 28672, 128256),
    Shape(405.0, 126, 16384, 53248, 128256),
)


def shape_for(params_b: float) -> Shape:
    """The known shape nearest ``params_b`` on a log scale."""
    return min(SHAPES, key=lambda shape: abs(math.log(shape.params_b / params_b)))


@dataclass(frozen=True)
class DiskNeed:
    weights_gb: float
    weights_source: str
    checkpoints_gb: float
    margin_gb: float

    @property
    def total_gb(self) -> int:
        return math.ceil(self.weights_gb + self.checkpoints_gb + self.margin_gb)


@dataclass(frozen=True)
class MemoryNeed:
    weights_gb: float
    lora_gb: float
    activations_gb: float
    reserve_gb: float

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.lora_gb + self.activations_gb + self.reserve_gb

    def fits(self, memory_gb: float) -> bool:
        return self.total_gb <= memory_gb * USABLE_SHARE


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


def parameters_b(spec: JobSpec) -> float | None:
    """The model's parameters in billions; a size read from a name ("70B") is the known shape's exact count."""
    named = spec.parameters_b()
    if named is None or spec.model_size_b is not None:
        return named
    shape = shape_for(named)
    return shape.params_b if abs(math.log(shape.params_b / named)) < 0.05 else named


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


def memory_need(spec: JobSpec) -> MemoryNeed | None:
    """GPU memory of one training micro-step on one GPU; None when the model's size is unknown."""
    params_b = parameters_b(spec)
    if params_b is None:
        return None
    hp = spec.hyperparameters
    shape = shape_for(params_b)
    tokens = hp.batch_size * hp.max_seq_length
    h, i = shape.hidden, shape.intermediate
    # One layer's working set in bf16 (attention and MLP intermediates), recomputed in backward when
    # checkpointing; without it every layer keeps its own.
    layer = 34 * h + 6 * i
    kept = shape.layers * 2 * h + layer if hp.activation_checkpointing else shape.layers * layer
    # The trainer computes the loss in chunks (TRL's, or Liger's fused loss): full logits never exist. One
    # chunk's bf16 logits and fp32 upcast remain, about a sixteenth of them at a time.
    logits = 10 * shape.vocab // 16
    activations = tokens * (kept + logits) / GB
    weights = params_b * (NF4_BYTES if hp.load_in_4bit else BF16_BYTES)
    lora = shape.lora_params(hp.lora_r, len(hp.target_modules)) * LORA_TRAIN_BYTES / GB
    return MemoryNeed(round(weights, 1), round(lora, 1), round(activations, 1), CUDA_RESERVE_GB)


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

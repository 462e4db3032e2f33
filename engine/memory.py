"""GPU memory of one training micro-step, estimated from the spec: what a pod must hold and how ranks share it.

NF4 weights, the LoRA weights with their gradients and Adam states, and the activations of one micro-batch of
``batch_size × max_seq_length`` tokens (TRL packs it into one row). The model shape is the nearest Llama-family
shape by parameter count; the figures are an estimate that errs on the side of fitting.

The same estimate sizes a pod before it is rented (remote.runpod.plan) and picks, for ``parallelism = auto``,
how several GPUs share a job (``choose_parallelism``): each holds the whole 4-bit model (ddp) when one copy with
its activations fits one GPU, else each holds a shard (fsdp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.config import JobSpec

GB = 1e9
BF16_BYTES = 2.0
# NF4 with double quantization, the embeddings and lm_head kept in bf16: Llama-3-70B holds about 37-40 GB.
NF4_BYTES = 0.55
# Per LoRA parameter on the GPU: fp32 weights, gradients and Adam's two moments.
LORA_TRAIN_BYTES = 16.0
CUDA_RESERVE_GB = 2.5  # the CUDA context, cuBLAS workspaces and the allocator's fragmentation
USABLE_SHARE = 0.95  # the driver never hands a process the whole card


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


def parameters_b(spec: JobSpec) -> float | None:
    """The model's parameters in billions; a size read from a name ("70B") is the known shape's exact count."""
    named = spec.parameters_b()
    if named is None or spec.model_size_b is not None:
        return named
    shape = shape_for(named)
    return shape.params_b if abs(math.log(shape.params_b / named)) < 0.05 else named


def memory_need(spec: JobSpec, *, shards: int = 1) -> MemoryNeed | None:
    """GPU memory of one training micro-step on one GPU, the model split over ``shards`` GPUs (FSDP: weights and
    LoRA states divided, activations each rank's own); None when the model's size is unknown."""
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
    weights = params_b * (NF4_BYTES if hp.load_in_4bit else BF16_BYTES) / shards
    lora = shape.lora_params(hp.lora_r, len(hp.target_modules)) * LORA_TRAIN_BYTES / GB / shards
    return MemoryNeed(round(weights, 1), round(lora, 1), round(activations, 1), CUDA_RESERVE_GB)


def choose_parallelism(spec: JobSpec, ranks: int, gpu_memory_gb: float | None) -> tuple[str, str]:
    """How ``ranks`` ranks share the job, ``ddp`` or ``fsdp``, and why; ``gpu_memory_gb`` is one GPU's memory
    (None: the ranks run on the CPU)."""
    chosen = spec.resources.parallelism
    if chosen != "auto":
        return chosen, f"parallelism={chosen} in the spec"
    if gpu_memory_gb is None:
        return "ddp", "auto: CPU ranks run data parallel (FSDP shards across GPUs only)"
    need = memory_need(spec)
    if need is None:
        return "ddp", "auto: the model's size is unknown (set model_size_b to weigh fsdp), so each GPU holds a copy"
    if need.fits(gpu_memory_gb):
        return "ddp", (
            f"auto: the model with one micro-batch needs about {need.total_gb:.0f} GB (weights {need.weights_gb:g}, "
            f"activations {need.activations_gb:g}), which fits one GPU's {gpu_memory_gb:.0f} GB: each GPU holds a copy"
        )
    sharded = memory_need(spec, shards=ranks) or need
    # FSDP shards weights and optimizer states, not a rank's activations: a micro-batch too big stays too big.
    verdict = "" if sharded.fits(gpu_memory_gb) else " — still too much: a smaller batch_size is needed"
    return "fsdp", (
        f"auto: the model with one micro-batch needs about {need.total_gb:.0f} GB (weights {need.weights_gb:g}, "
        f"activations {need.activations_gb:g}), more than one GPU's {gpu_memory_gb:.0f} GB: sharded over {ranks} "
        f"GPUs, about {sharded.total_gb:.0f} GB each{verdict}"
    )

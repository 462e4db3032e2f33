"""Training-speed settings: whether this machine can honour them, and what each becomes for transformers and TRL.

The settings live in the job spec (``attn_implementation``, ``liger_kernel``, ``upcast_non_lora``,
``torch_compile``, ``optimizer``, and the micro-step's ``batch_size`` × ``max_seq_length`` tokens). A setting
that this machine cannot run is refused before anything loads, with what to change: a user who asked for a
faster kernel should learn at once that it is missing, not find out from the bill that the job ran without it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

from engine import SpecError
from engine.config import Hyperparameters

# PyTorch's fused attention: on every device. A packed row reaches it with a mask that keeps each document to itself.
DEFAULT_ATTENTION = "sdpa"
# FlashAttention-2's varlen kernel (the flash-attn package, or the kernels package's kernels-community/flash-attn2,
# which transformers substitutes when flash-attn is missing): each document attended alone, no mask at all.
VARLEN_ATTENTION = "flash_attention_2"


def attention(hp: Hyperparameters, *, cuda: bool) -> str:
    """The ``attn_implementation`` transformers loads the model with.

    ``auto`` is FlashAttention-2 on a CUDA GPU with bf16 where flash-attn or kernels is installed, else sdpa."""
    if hp.attn_implementation != "auto":
        return hp.attn_implementation
    if cuda and hp.bf16 and _flash_attention_installed():
        return VARLEN_ATTENTION
    return DEFAULT_ATTENTION


def flattens_rows(attn_implementation: str) -> bool:
    """Whether a micro-step's packed rows reach the model as one flattened row (TRL's padding-free batch).

    Only a varlen kernel attends within each document of a flattened row without a mask. Any other kernel would be
    handed a dense mask over all rows × length tokens, (batch_size × max_seq_length)² entries, and compute that
    whole square: with those, the rows stay rows, each masked to its own documents (engine.packed_rows)."""
    from transformers.utils.generic import is_flash_attention_requested

    return bool(is_flash_attention_requested(requested_attention_implementation=attn_implementation))


def optimizer(hp: Hyperparameters, *, cuda: bool) -> str:
    """The Trainer's ``optim``: ``auto`` is paged 8-bit AdamW for 4-bit weights on CUDA, else torch AdamW."""
    if hp.optimizer != "auto":
        return hp.optimizer
    return "paged_adamw_8bit" if hp.load_in_4bit and cuda else "adamw_torch"


def tokens_per_micro_step(hp: Hyperparameters) -> int:
    """The most tokens one forward and backward pass sees: packed, ``batch_size`` sequences of ``max_seq_length``."""
    return hp.batch_size * hp.max_seq_length


def check_machine(hp: Hyperparameters, *, cuda: bool) -> None:
    """SpecError naming every speed setting this machine cannot run (and a ``report_to`` logger it lacks), and
    what to set instead."""
    problems = _missing_logger(hp)
    if hp.attn_implementation == "flash_attention_2":
        if not cuda:
            problems.append(
                "attn_implementation: flash_attention_2 needs a CUDA GPU and this machine has none; "
                "set attn_implementation=auto (sdpa)"
            )
        elif not _flash_attention_installed():
            problems.append(
                "attn_implementation: flash_attention_2 needs the flash-attn package (or the kernels package, which "
                "fetches kernels-community/flash-attn2 from the Hub), and neither is installed here; install one "
                "or set attn_implementation=auto (sdpa)"
            )
    if hp.liger_kernel:
        if not cuda:
            problems.append(
                "liger_kernel: Liger's kernels are Triton kernels for CUDA GPUs and this machine has none; "
                "set liger_kernel=false"
            )
        elif not _liger_installed():
            problems.append(
                "liger_kernel: the liger-kernel package is not installed here (pip install liger-kernel); install it "
                "or set liger_kernel=false"
            )
    if hp.torch_compile and not cuda and not _cpp_compiler():
        problems.append(
            "torch_compile: compiling for a CPU needs a C++ compiler (g++ or clang++) and none is on PATH; "
            "install one or set torch_compile=false"
        )
    if problems:
        raise SpecError("\n".join(problems))


# What each report_to value needs installed: transformers' TensorBoard writer takes torch's (which needs the
# tensorboard package) or tensorboardX's.
REPORT_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def _missing_logger(hp: Hyperparameters) -> list[str]:
    packages = REPORT_PACKAGES.get(hp.report_to, ())
    if packages and not any(importlib.util.find_spec(name) for name in packages):
        return [
            f"report_to: {hp.report_to} needs the {packages[0]} package and it is not installed here "
            f"(pip install {packages[0]}); install it or set report_to=none"
        ]
    return []


def describe(hp: Hyperparameters, *, cuda: bool) -> str:
    """One line for the log: every speed setting as it will run."""
    upcast = "fp32" if hp.upcast_non_lora or not hp.bf16 else "bf16"
    chosen = attention(hp, cuda=cuda)
    layout = "rows flattened, varlen" if flattens_rows(chosen) else "rows kept apart"
    picked = f"auto → {chosen}" if hp.attn_implementation == "auto" else chosen
    parts = [
        f"attention {picked} ({layout})" if hp.packing else f"attention {picked}",
        f"optimizer {optimizer(hp, cuda=cuda)}",
        f"micro-step {hp.batch_size} × {hp.max_seq_length} = {tokens_per_micro_step(hp):,} tokens"
        + (" (packed)" if hp.packing else " (padded)"),
        f"activation checkpointing {'on' if hp.activation_checkpointing else 'off'}",
        f"torch.compile {'on' if hp.torch_compile else 'off'}",
        f"liger kernels {'on' if hp.liger_kernel else 'off'}",
    ]
    if hp.load_in_4bit:
        parts.append(f"embedding, norms and lm_head in {upcast}")
    return "speed settings: " + " · ".join(parts)


def _flash_attention_installed() -> bool:
    from transformers.utils import is_flash_attn_2_available, is_kernels_available

    return bool(is_flash_attn_2_available() or is_kernels_available())


def _liger_installed() -> bool:
    from transformers.utils import is_liger_kernel_available

    return bool(is_liger_kernel_available())


def _cpp_compiler() -> bool:
    candidates = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(name and shutil.which(name) for name in candidates)

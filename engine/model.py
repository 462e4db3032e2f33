"""The model_loading stage: resolve the base model, load it (4-bit NF4 or plain), and put LoRA on it."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.config import DEMO_MODEL, Hyperparameters, JobSpec
from engine.speed import DEFAULT_ATTENTION, attention

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def resolve_base_model(name: str, models_dir: Path) -> str:
    """A Hub id or local path as given; ``demo:tiny-llama`` as the demo model's folder, built on first use."""
    if name != DEMO_MODEL:
        return name
    target = models_dir / "tiny-llama"
    if (target / "config.json").exists():
        return str(target)
    models_dir.mkdir(parents=True, exist_ok=True)
    with (models_dir / ".tiny-llama.lock").open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two first jobs at once build it once
        if not (target / "config.json").exists():
            from engine.demo import build_demo_model, dataset_chats, dataset_texts, sample_dataset

            log.info("building the demo model into %s (first use)", target)
            staging = models_dir / f".tiny-llama-{os.getpid()}"
            sample = sample_dataset()
            build_demo_model(staging, dataset_texts(sample), dataset_chats(sample))
            staging.replace(target)
    return str(target)


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def placement() -> str:
    """Where this process puts the model: its own GPU (one per rank), or the CPU."""
    from engine.distributed import local_rank

    return f"cuda:{local_rank()}" if device() == "cuda" else "cpu"


def compute_dtype(spec: JobSpec) -> torch.dtype:
    import torch

    return torch.bfloat16 if spec.hyperparameters.bf16 else torch.float32


def load_tokenizer(model_path: str, token: str | None) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, token=token)
    if tokenizer.pad_token is None:
        # Llama 3 has no pad token; padding never reaches the loss (labels are masked), any id will do.
        tokenizer.pad_token = "<|end_of_text|>" if "<|end_of_text|>" in tokenizer.get_vocab() else tokenizer.eos_token
    return tokenizer


def load_model(spec: JobSpec, model_path: str, token: str | None) -> PeftModel:
    """The base model, quantized to NF4 when asked (CUDA, or CPU through bitsandbytes), with LoRA adapters."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, set_seed

    hp = spec.hyperparameters
    dtype = compute_dtype(spec)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "token": token,
        "device_map": {"": placement()},
        "attn_implementation": attention(hp, cuda=device() == "cuda"),
    }
    if hp.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=hp.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=hp.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=dtype,
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        if hp.attn_implementation != "auto" or kwargs["attn_implementation"] == DEFAULT_ATTENTION:
            raise
        # auto chose FlashAttention-2 and its kernel would not load (the kernels package fetches a build for this
        # torch and CUDA from the Hub, and there may be none): auto means the fastest kernel that runs, so sdpa,
        # with the packed rows kept apart. transformers checks the kernel before it reads any weight.
        log.warning("attention: %s did not load (%s); auto falls back to sdpa", kwargs["attn_implementation"], exc)
        kwargs["attn_implementation"] = DEFAULT_ATTENTION
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    model.config.use_cache = False  # packed sequences stay isolated only without the KV cache
    if hp.load_in_4bit and hp.upcast_non_lora:
        # peft's QLoRA recipe: every non-quantized weight (embedding, norms, lm_head) in fp32 for stability.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=hp.activation_checkpointing)
    elif hp.load_in_4bit and hp.activation_checkpointing:
        model.enable_input_require_grads()  # what the recipe does besides the upcast (get_peft_model freezes)
    lora = lora_config(hp)
    set_seed(hp.seed)  # LoRA's A matrices start random: the same seed makes every run (and resume) identical
    peft_model = get_peft_model(model, lora)
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info(
        "loaded %s on %s (%s, %s, attention %s): %s trainable of %s parameters",
        model_path,
        placement(),
        "4-bit " + hp.bnb_4bit_quant_type if hp.load_in_4bit else "no quantization",
        str(dtype).removeprefix("torch."),
        model.config._attn_implementation,
        f"{trainable:,}",
        f"{total:,}",
    )
    return peft_model


def lora_config(hp: Hyperparameters) -> Any:
    """The adapters a job trains: its rank, alpha, dropout and target modules, no bias, causal LM."""
    from peft import LoraConfig

    return LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=list(hp.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )

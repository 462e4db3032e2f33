"""The benchmark's model: Llama-shaped decoder layers built one at a time on the device (quantized to NF4 as
each is made), LoRA on top, and the speed settings of ``python -m engine bench`` applied as the engine's trainer
applies them (attention kernel, TRL's chunked loss head, Liger's kernels, torch.compile, the optimizer)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from engine.bench import BenchmarkFailed, Shape, model_parameters

# TRL's SFTTrainer asks its chunked loss head for these per-token outputs; the benchmark asks for the same.
LOSS_HEAD_OUTPUTS = ("log_probs", "entropy", "is_top1")
LOSS_CHUNK = 32768  # vocabulary columns per tile, as TRL's head uses


def build(shape: Shape, args: argparse.Namespace, device: Any) -> tuple[Any, int]:
    """The K-layer model on ``device``, and the allocator bytes of all but its decoder layers (0 off CUDA)."""
    import torch
    from peft import prepare_model_for_kbit_training
    from torch import nn
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

    settings: dict[str, Any] = {
        "vocab_size": shape.vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": shape.rope_theta},
        "max_position_embeddings": 8192,
        "tie_word_embeddings": shape.tied_embeddings,
        "use_cache": False,  # packed sequences stay isolated only without the KV cache
        "attn_implementation": args.attn,
    }
    config = LlamaConfig(**settings)
    with torch.device("meta"):
        model: Any = LlamaForCausalLM(config)
    if device.type == "cuda":  # cuBLAS workspaces (one per thread: backward too) stay: keep them out of per-layer
        square = torch.ones(64, 64, device=device, dtype=torch.bfloat16, requires_grad=True)
        nn.functional.linear(square @ square, square, square[0]).sum().backward()
    baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    with torch.device(device), _default_dtype(torch.bfloat16):
        model.model.embed_tokens = nn.Embedding(shape.vocab, shape.hidden)
        model.model.norm = LlamaRMSNorm(shape.hidden, eps=shape.rms_norm_eps)
        model.model.rotary_emb = LlamaRotaryEmbedding(config)
        model.lm_head = nn.Linear(shape.hidden, shape.vocab, bias=False)
        for index in range(args.layers):
            layer = LlamaDecoderLayer(config, index)
            if args.load_in_4bit:
                _quantize_linears(layer, device)
            model.model.layers[index] = layer
    on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    built = sum(p.numel() * (2 if getattr(p, "bnb_quantized", False) else 1) for p in model.parameters())
    if on_meta or built != model_parameters(shape, args.layers):
        raise BenchmarkFailed(f"model build: {built:,} parameters, left on the meta device: {on_meta[:3]}")
    if args.loss == "chunked":  # as TRL's SFTTrainer does to the engine's model: no full logits
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=LOSS_HEAD_OUTPUTS)
    if args.load_in_4bit:
        model.is_loaded_in_4bit = True  # as transformers' bitsandbytes loader marks it; peft reads it
        if args.upcast:  # the engine's QLoRA path (engine.model.load_model) does this
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if args.checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    outside = [model.model.embed_tokens, model.model.norm, model.model.rotary_emb, model.lm_head]
    fixed = sum(t.numel() * t.element_size() for m in outside for t in [*m.parameters(), *m.buffers()])
    return model, baseline + fixed if device.type == "cuda" else 0


def _quantize_linears(layer: Any, device: Any) -> None:
    """Swap each bf16 Linear of a layer for an NF4 (double-quantized, bf16 compute) bitsandbytes Linear4bit."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    for name, linear in list(layer.named_modules()):
        if isinstance(linear, nn.Linear):
            quantized = bnb.nn.Linear4bit(
                linear.in_features,
                linear.out_features,
                bias=False,
                compute_dtype=torch.bfloat16,
                compress_statistics=True,
                quant_type="nf4",
                device="meta",
            )
            weight: Any = bnb.nn.Params4bit(
                linear.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4", module=quantized
            )
            quantized.weight = weight.to(device)  # bitsandbytes quantizes on this move
            parent, _, attr = name.rpartition(".")
            setattr(layer.get_submodule(parent), attr, quantized)


def add_lora(model: Any, hp: Any, *, quantized: bool) -> Any:
    """LoRA on every projection, set up as TRL's SFTTrainer does it for the engine."""
    import torch
    from peft import get_peft_model

    from engine.model import lora_config

    peft_model = get_peft_model(model, lora_config(hp))
    if model.is_activation_checkpointing:
        peft_model.enable_input_require_grads()
    if quantized:  # QLoRA's adapters train in bf16 (TRL casts them for quantized models)
        for param in peft_model.parameters():
            if param.requires_grad:
                param.data = param.data.to(torch.bfloat16)
    return peft_model


@contextlib.contextmanager
def _default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def apply_speed_settings(model: Any, args: argparse.Namespace) -> Any:
    """Liger's layer kernels (not its fused loss: TRL's head does that part) and torch.compile, as the trainer
    applies them; returns what to call for a forward pass."""
    if args.liger:
        from transformers.integrations.liger import apply_liger_kernel

        apply_liger_kernel(model, {"fused_linear_cross_entropy": False})
    if args.compile:
        import torch

        return torch.compile(model)
    return model


def make_optimizer(name: str, parameters: list[Any], settings: dict[str, Any]) -> Any:
    """The Trainer's ``optim`` choices, as objects."""
    import torch

    if name in {"adamw_torch", "adamw_torch_fused"}:
        return torch.optim.AdamW(parameters, fused=name == "adamw_torch_fused" or None, **settings)
    import bitsandbytes as bnb

    kinds = {
        "adamw_8bit": bnb.optim.AdamW8bit,
        "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
        "paged_adamw_32bit": bnb.optim.PagedAdamW32bit,
    }
    return kinds[name](parameters, **settings)


def loss_of(forward: Any, ids: Any, positions: Any, *, chunked: bool) -> Any:
    """The training loss of one packed batch, through the chunked head or the full logits."""
    if chunked:
        return forward(input_ids=ids, position_ids=positions, labels=ids, fused_lm_head=True).loss
    return forward(input_ids=ids, position_ids=positions, labels=ids).loss


def head_loss(base: Any, hidden: Any, ids: Any, *, chunked: bool) -> Any:
    """lm_head and loss on final hidden states: TRL's chunked log-probabilities or the full logits."""
    if not chunked:
        logits = base.lm_head(base.model.norm(hidden))
        return base.loss_function(logits=logits, labels=ids, vocab_size=base.config.vocab_size)
    from trl.kernels import ChunkedLogProbFunction

    head = base.get_output_embeddings()
    normed = base.model.norm(hidden)[:, :-1].reshape(-1, hidden.size(-1))
    log_probs = ChunkedLogProbFunction.apply(
        normed, head.weight, head.bias, ids[:, 1:].reshape(-1), 1.0, LOSS_CHUNK, None, 1.0, LOSS_HEAD_OUTPUTS
    )[0]
    return -log_probs.mean()

"""``python -m engine bench``: QLoRA training throughput on Llama-3-70B layer shapes, extrapolated to 80 layers.

The model has Llama 3 70B's shapes (hidden 8192, MLP 28672, 64 heads, 8 KV heads, vocab 128256, RMSNorm, rope
theta 500000) but only ``--layers K`` decoder layers, randomly initialised: nothing is downloaded. Its skeleton
is made on the meta device, then the embedding, norm and lm_head on the target device and the layers one at a
time, each quantized to NF4 (double quantization, bf16 compute) as soon as it exists: at most one layer's bf16
weights are ever on the device. Training follows the engine's QLoRA path: peft's prepare_model_for_kbit_training
(fp32 embedding, norms and lm_head; ``--no-upcast`` keeps them bf16), LoRA r16/α32 on all seven projections,
activation checkpointing, bf16 autocast, paged 8-bit AdamW on CUDA (torch AdamW otherwise), packed sequences,
sdpa attention and TRL's chunked loss head (no full logits). Each speed setting of the job spec has a flag here
(``--attn``, ``--liger``, ``--compile``, ``--no-upcast``, ``--optimizer``, ``--loss``; ``--batch`` × ``--seq-len``
tokens per step), so each can be timed on and off; the model itself is built in ``engine.bench_model``.

Formulas (``FORMULAS``, printed with the figures): N counts the base model's parameters (layers, embedding,
final norm, untied lm_head; Llama 3 70B: 70,553,706,496). FLOPs per token are ``6·N`` (the convention of
full fine-tuning papers) and the LoRA-aware ``4·N + 2·N``: forward 2N, backward 2N for activation gradients
only (frozen weights), and 2N more when checkpointing recomputes the forward, so with checkpointing on the two
agree. MFU = tokens/s × FLOPs per token ÷ the dense bf16 peak. For 80 layers, seconds per token are
``s_fixed + 80 × (s_K − s_fixed) ÷ K``, s_K measured on the K-layer model and s_fixed (embedding, mask and rotary
tables, final norm, lm_head and loss, forward and backward) timed separately; the peak memory is extrapolated as
``peak_K + (80 − K) × (resident + saved)`` per layer, both measured in the run.

``--gpus N`` times the same benchmark on one rank and on N in one run, for the speed-up of N GPUs
(engine.bench_ranks); the table itself is drawn by engine.bench_report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Any

from engine import EngineError, bench_ranks, distributed
from engine.bench_report import format_report

TARGET_LAYERS = 80
# Dense bf16 tensor-core peaks in TFLOP/s, matched in order against torch.cuda.get_device_name().
PEAK_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H100", "NVL"), 835.0),
    (("H100", "PCIe"), 756.0),
    (("H100",), 989.0),  # SXM: "NVIDIA H100 80GB HBM3"
    (("H200", "NVL"), 835.0),  # 1,671 with sparsity
    (("H200",), 989.0),
    (("A100",), 312.0),
]
FORMULAS = {
    "N": "base-model parameters: layers × per-layer + embedding + final norm + lm_head (LoRA adapters excluded)",
    "flops_per_token_6n": "6·N",
    "flops_per_token_4n_2n": "4·N, + 2·N with activation checkpointing (forward, backward for activation "
    "gradients only, recomputed forward)",
    "mfu": "tokens/s × FLOPs per token ÷ dense bf16 peak",
    "seconds_per_token_80": "s_fixed + 80 × (s_K − s_fixed) ÷ K; s_fixed: embedding, mask, rotary, final norm, "
    "lm_head and loss, forward and backward, timed separately",
    "peak_memory_80": "peak_K + (80 − K) × (resident per layer + saved activations per layer): an extrapolation; "
    "paged optimizer states (CUDA managed memory, about 2 bytes per LoRA parameter) are outside it",
}
# The job spec's words for a speed setting, and this command's flag for it (in refusals).
FLAGS = {
    "set attn_implementation=auto (sdpa)": "use --attn sdpa",
    "set liger_kernel=false": "leave out --liger",
    "set torch_compile=false": "leave out --compile",
    "attn_implementation:": "--attn:",
    "liger_kernel:": "--liger:",
    "torch_compile:": "--compile:",
}
OPTIMIZERS = ["auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"]


class BenchmarkFailed(EngineError):
    """The benchmark could not run, or did not train (a loss that is not finite, LoRA weights that stayed put)."""


@dataclass(frozen=True)
class Shape:
    """A Llama-architecture model's widths; ``layers`` is the full model's depth."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    layers: int = TARGET_LAYERS
    rope_theta: float = 500_000.0
    rms_norm_eps: float = 1e-5
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


LLAMA3_70B = Shape(hidden=8192, intermediate=28672, heads=64, kv_heads=8, vocab=128256)
# Every Linear's output width is a multiple of 32 (q/o 64, k/v 32, gate/up 256, down 64), as bitsandbytes'
# CPU 4-bit kernels need.
TOY = Shape(hidden=64, intermediate=256, heads=4, kv_heads=2, vocab=4096)


def layer_parameters(shape: Shape) -> int:
    """Parameters of one decoder layer: attention, SwiGLU MLP and the two RMSNorm weights."""
    q_and_o = 2 * shape.hidden * shape.heads * shape.head_dim
    k_and_v = 2 * shape.hidden * shape.kv_heads * shape.head_dim
    return q_and_o + k_and_v + 3 * shape.hidden * shape.intermediate + 2 * shape.hidden


def model_parameters(shape: Shape, layers: int) -> int:
    """N of the base model with ``layers`` decoder layers: layers, embedding, final norm, lm_head unless tied."""
    tables = 1 if shape.tied_embeddings else 2
    return layers * layer_parameters(shape) + tables * shape.vocab * shape.hidden + shape.hidden


def flops_per_token(n_params: int, *, checkpointing: bool) -> dict[str, float]:
    """Training FLOPs per token in both conventions: ``6N`` and the LoRA-aware ``4N + 2N``."""
    return {"6N": 6.0 * n_params, "4N+2N": 4.0 * n_params + (2.0 * n_params if checkpointing else 0.0)}


def mfu(tokens_per_s: float | None, flops: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation as a fraction of the peak; None without a peak (or a rate)."""
    if tokens_per_s is None or peak_tflops is None:
        return None
    return tokens_per_s * flops / (peak_tflops * 1e12)


def extrapolate_seconds_per_token(s_k: float, s_fixed: float, layers: int, target: int = TARGET_LAYERS) -> float:
    """``s_fixed + target × (s_k − s_fixed) ÷ layers``: the per-layer time scaled to ``target`` layers."""
    return s_fixed + target * (s_k - s_fixed) / layers


def extrapolate_peak_memory(peak_k: int, per_layer: int, layers: int, target: int = TARGET_LAYERS) -> int:
    """``peak_k + (target − layers) × per_layer``: the peak memory with ``target`` layers."""
    return peak_k + (target - layers) * per_layer


def peak_tflops_for(device_name: str) -> float | None:
    """A GPU's dense bf16 peak from its name; None when the table does not know it."""
    for words, tflops in PEAK_TFLOPS:
        if all(word.lower() in device_name.lower() for word in words):
            return tflops
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` sub-command's options (this module imports no torch until the benchmark runs)."""
    add = parser.add_argument
    add("--layers", type=_positive, default=4, help="decoder layers to build (default 4)")
    add("--seq-len", type=_positive, help="tokens per packed sequence (default 4096; --toy 256)")
    add("--doc-len", type=int, help="tokens per packed document (default: a quarter of --seq-len; 0: one)")
    add("--batch", type=_positive, default=1, help="packed sequences per optimizer step (default 1)")
    add("--steps", type=_positive, default=10, help="timed optimizer steps (default 10)")
    add("--warmup", type=_positive, default=3, help="untimed steps before them (default 3)")
    add("--no-4bit", dest="load_in_4bit", action="store_false", help="plain bf16 LoRA, no quantization")
    add("--no-activation-checkpointing", dest="checkpointing", action="store_false", help="keep activations")
    add("--no-upcast", dest="upcast", action="store_false", help="4-bit: keep embedding, norms, lm_head in bf16")
    add(
        "--attn", choices=["sdpa", "eager", "flash_attention_2"], default="sdpa", help="attention kernel (default sdpa)"
    )
    add("--liger", action="store_true", help="Liger's RMSNorm, RoPE and SwiGLU kernels (CUDA, liger-kernel)")
    add("--compile", action="store_true", help="torch.compile the model (the first warm-up steps compile it)")
    add("--optimizer", choices=OPTIMIZERS, default="auto", help="auto: paged 8-bit AdamW on CUDA with 4-bit weights")
    add("--loss", choices=["chunked", "full"], default="chunked", help="chunked: TRL's loss head; full: all logits")
    add("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when visible, else CPU")
    add("--peak-tflops", type=float, help="dense bf16 peak for MFU (default: from the GPU's name)")
    add("--toy", action="store_true", help="tiny shapes: the whole path, 4-bit included, in seconds on a CPU")
    add("--json", action="store_true", help="print one JSON object instead of the table")
    bench_ranks.add_arguments(parser, _positive)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be a whole number of at least 1")
    return int(text)


def main(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table (or the JSON object). 0 on success, 1 when it failed.

    ``argv`` are the bench's own arguments: a ``--gpus`` run gives them to each of its runs (engine.bench_ranks)."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # library chatter must not mix into the JSON
            if args.gpus > 1 and not distributed.is_rank_process():
                report = bench_ranks.measure(argv if argv is not None else sys.argv[2:], args.gpus)
            else:
                report = run(args)
    except EngineError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    if distributed.rank() != 0:  # rank 0 speaks for the ranks
        return 0
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_report(report))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build, train and time the model; the report as a JSON-compatible dict."""
    import torch

    from engine.bench_model import add_lora, apply_speed_settings, build

    shape = TOY if args.toy else LLAMA3_70B
    seq_len = args.seq_len or (256 if args.toy else 4096)
    doc_len = seq_len // 4 if args.doc_len is None else args.doc_len
    if not 0 <= doc_len <= seq_len:
        raise BenchmarkFailed(f"--doc-len {doc_len}: must lie between 0 and --seq-len {seq_len}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        raise BenchmarkFailed(f"--peak-tflops {args.peak_tflops}: must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise BenchmarkFailed("--device cuda: no CUDA device is visible")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    distributed.init(use_cpu=not cuda)  # one of several ranks (--gpus): this one's GPU, in their process group
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    hp = speed_settings(args, cuda=cuda)
    torch.manual_seed(0)
    try:
        model, fixed_bytes = build(shape, args, device)
        model = add_lora(model, hp, quantized=args.load_in_4bit)
        forward = bench_ranks.wrap(apply_speed_settings(model, args), device)
        measured, optimizer, lora_parameters = _train(
            model, forward, args, hp, shape, device, seq_len, doc_len, fixed_bytes
        )
    except torch.OutOfMemoryError as exc:
        raise BenchmarkFailed(f"out of device memory: fewer --layers or a shorter --seq-len may fit ({exc})") from None
    conditions = _conditions(args, shape, device, seq_len, doc_len, optimizer, hp)

    tokens_per_step = args.batch * seq_len
    s_k = measured["seconds_per_step"] / tokens_per_step
    s_80 = extrapolate_seconds_per_token(s_k, measured["fixed_part_seconds_per_token"], args.layers)
    peak, resident = measured["peak_memory_bytes"], measured["resident_bytes_per_layer"]
    peak_80 = None
    if peak is not None and resident is not None:
        per_layer = resident + measured["saved_activation_bytes_per_layer"]
        peak_80 = extrapolate_peak_memory(peak, per_layer, args.layers)

    def line(layers: int, tokens_per_s: float | None, seconds_per_step: float) -> dict[str, Any]:
        n = model_parameters(shape, layers)
        flops = flops_per_token(n, checkpointing=args.checkpointing)
        return {
            "layers": layers,
            "parameters": n,
            "tokens_per_s": tokens_per_s,
            "seconds_per_step": seconds_per_step,
            "mfu_6n": mfu(tokens_per_s, flops["6N"], conditions["peak_tflops"]),
            "mfu_4n_2n": mfu(tokens_per_s, flops["4N+2N"], conditions["peak_tflops"]),
            "flops_per_token_6n": flops["6N"],
            "flops_per_token_4n_2n": flops["4N+2N"],
            "lora_parameters": lora_parameters * layers // args.layers,
        }

    extrapolated = {"peak_memory_bytes": peak_80, "peak_memory_is_extrapolated": True}
    return {
        "conditions": conditions,
        "measured": line(args.layers, 1.0 / s_k, s_k * tokens_per_step) | measured,
        "extrapolated": line(TARGET_LAYERS, 1.0 / s_80 if s_80 > 0 else None, s_80 * tokens_per_step) | extrapolated,
        "formulas": FORMULAS,
    }


def speed_settings(args: argparse.Namespace, *, cuda: bool) -> Any:
    """The flags as the job spec's hyperparameters; BenchmarkFailed where this machine cannot run one."""
    from engine import SpecError
    from engine.config import Hyperparameters
    from engine.speed import check_machine

    hp = Hyperparameters(
        attn_implementation=args.attn, liger_kernel=args.liger, torch_compile=args.compile, optimizer=args.optimizer,
        upcast_non_lora=args.upcast, load_in_4bit=args.load_in_4bit, activation_checkpointing=args.checkpointing,
    )  # fmt: skip
    try:
        check_machine(hp, cuda=cuda)
    except SpecError as exc:
        text = str(exc)
        for setting, flag in FLAGS.items():
            text = text.replace(setting, flag)
        raise BenchmarkFailed(text) from None
    return hp


def _train(
    model: Any,
    forward: Any,
    args: argparse.Namespace,
    hp: Any,
    shape: Shape,
    device: Any,
    seq_len: int,
    doc_len: int,
    fixed: int,
) -> tuple[dict[str, Any], str, int]:
    """Warm-up steps (the first also measures memory per layer), the timed steps, then the part outside the layers.

    Returns the measured figures, the optimizer's name and the number of LoRA parameters."""
    import torch

    from engine.bench_model import loss_of, make_optimizer
    from engine.speed import flattens_rows
    from engine.speed import optimizer as optimizer_choice

    trainable = [p for p in model.parameters() if p.requires_grad]
    cuda = device.type == "cuda"
    optimizer_name = optimizer_choice(hp, cuda=cuda)
    optimizer = make_optimizer(optimizer_name, trainable, {"lr": hp.learning_rate, "weight_decay": hp.weight_decay})
    ids = torch.randint(0, shape.vocab, (args.batch, seq_len), device=device)
    positions = torch.arange(seq_len, device=device)
    if doc_len:  # position ids restart at each document: transformers then keeps each document to itself
        positions = positions % doc_len
    positions = positions.unsqueeze(0).expand(args.batch, -1)
    if flattens_rows(args.attn):  # as the engine's trainer hands a varlen kernel its rows: one flattened row
        ids, positions = ids.reshape(1, -1), positions.reshape(1, -1)

    def step() -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_of(forward, ids, positions, chunked=args.loss == "chunked")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, hp.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    before = [p.detach().to("cpu", copy=True) for p in trainable]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    marks: list[int] = []  # allocated bytes on entering the first decoder layer and the final norm
    base = model.get_base_model()
    hooks = [
        module.register_forward_pre_hook(lambda *_: marks.append(torch.cuda.memory_allocated(device)))
        for module in (base.model.layers[0], base.model.norm)
        if cuda
    ]
    losses = [step()]  # the first warm-up step also measures what each layer keeps for the backward
    for hook in hooks:
        hook.remove()
    resident = (
        torch.cuda.memory_allocated(device) if cuda else None
    )  # weights, adapters and optimizer states, between two steps
    losses += [step() for _ in range(args.warmup - 1)]
    _synchronize(device)
    start = time.perf_counter()
    losses += [step() for _ in range(args.steps)]
    _synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if cuda else None

    values = torch.stack([loss.float() for loss in losses]).cpu()
    if not torch.isfinite(values).all():
        raise BenchmarkFailed(f"the loss is not finite: {values.tolist()}")
    unchanged = sum(torch.equal(b, p.detach().cpu()) for b, p in zip(before, trainable, strict=True))
    if unchanged:
        raise BenchmarkFailed(f"{unchanged} of {len(trainable)} LoRA weight tensors did not change in training")
    measured = {
        "seconds_per_step": seconds / args.steps,
        "fixed_part_seconds_per_token": _time_fixed_part(model, ids, positions, device, chunked=args.loss == "chunked"),
        "loss_first": float(values[0]),
        "loss_last": float(values[-1]),
        "peak_memory_bytes": peak,
        "resident_bytes_per_layer": None if resident is None else (resident - fixed) // args.layers,
        "saved_activation_bytes_per_layer": (marks[1] - marks[0]) // args.layers if len(marks) == 2 else None,
    }
    return measured, optimizer_name, sum(p.numel() for p in trainable)


def _time_fixed_part(model: Any, ids: Any, positions: Any, device: Any, *, chunked: bool, reps: int = 3) -> float:
    """Seconds per token of everything outside the decoder layers, forward and backward, on the same batch."""
    import torch
    from transformers.masking_utils import create_causal_mask

    from engine.bench_model import head_loss

    base = model.get_base_model()
    embed = base.model.embed_tokens
    hidden = torch.randn(*ids.shape, embed.embedding_dim, device=device, dtype=embed.weight.dtype, requires_grad=True)

    def once() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            embeds = embed(ids)
            create_causal_mask(
                config=base.config, inputs_embeds=embeds, attention_mask=None, past_key_values=None,
                position_ids=positions,
            )  # fmt: skip
            base.model.rotary_emb(embeds, position_ids=positions)
            loss = head_loss(base, hidden, ids, chunked=chunked)
        loss.backward()
        hidden.grad = None

    once()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        once()
    _synchronize(device)
    return (time.perf_counter() - start) / (reps * ids.numel())


def _conditions(
    args: argparse.Namespace, shape: Shape, device: Any, seq_len: int, doc_len: int, optimizer: str, hp: Any
) -> dict[str, Any]:
    import torch

    cuda = device.type == "cuda"
    name = (
        torch.cuda.get_device_name(device)
        if cuda
        else f"CPU ({platform.machine()}, torch threads: {torch.get_num_threads()})"
    )
    peak = args.peak_tflops if args.peak_tflops is not None or not cuda else peak_tflops_for(name)
    return {
        "device": device.type,
        "device_name": name,
        "dtype": "bfloat16",
        "layers": args.layers,
        "target_layers": TARGET_LAYERS,
        "seq_len": seq_len,
        "doc_len": doc_len or seq_len,
        "batch": args.batch,
        "tokens_per_step": args.batch * seq_len,
        "load_in_4bit": args.load_in_4bit,
        "quantization": "nf4, double quantization, bf16 compute" if args.load_in_4bit else None,
        "fp32_embedding_norms_head": args.load_in_4bit and args.upcast,
        "activation_checkpointing": args.checkpointing,
        "lora": {"r": hp.lora_r, "alpha": hp.lora_alpha, "dropout": hp.lora_dropout, "targets": hp.target_modules},
        "optimizer": optimizer,
        "learning_rate": hp.learning_rate,
        "warmup_steps": args.warmup,
        "steps": args.steps,
        "attention": args.attn,
        "liger_kernel": args.liger,
        "torch_compile": args.compile,
        "loss": "TRL chunked log-probabilities" if args.loss == "chunked" else "full logits, cross-entropy",
        "toy": args.toy,
        "shape": asdict(shape),
        "versions": {p: version(p) for p in ("torch", "transformers", "peft", "trl", "bitsandbytes")},
        "peak_tflops": peak,
        "peak_tflops_source": "--peak-tflops" if args.peak_tflops is not None else "table" if peak else None,
    }


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)

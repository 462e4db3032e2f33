"""The ``python -m engine bench`` report as a readable table, with its conditions and formulas."""

from __future__ import annotations

from typing import Any

from engine.bench_ranks import format_ranks

GIB = 1024**3


def format_report(report: dict[str, Any]) -> str:
    """The report as a readable table, with its conditions and formulas."""
    c, m = report["conditions"], report["measured"]
    s, lora = c["shape"], c["lora"]
    peak = "n/a (give --peak-tflops)" if c["peak_tflops"] is None else (
        f"{c['peak_tflops']:g} TFLOP/s dense bf16 ({c['peak_tflops_source']})"
    )  # fmt: skip
    weights = c["quantization"] or "bf16, no quantization"
    if c["fp32_embedding_norms_head"]:
        weights += "; embedding, norms and lm_head upcast to fp32"
    lines = [
        "lorapod bench: LoRA training throughput, Llama-3-70B layer shapes" + (" (TOY shapes)" if c["toy"] else ""),
        f"  device      {c['device_name']} [{c['device']}], peak {peak}",
        f"  model       {c['layers']} of {c['target_layers']} decoder layers: hidden {s['hidden']}, MLP "
        f"{s['intermediate']}, {s['heads']} heads / {s['kv_heads']} KV, vocab {s['vocab']}, random weights",
        f"  weights     {weights}; attention {c['attention']}; loss: {c['loss']}"
        + "".join(
            f"; {name}" for name, on in (("Liger kernels", c["liger_kernel"]), ("compiled", c["torch_compile"])) if on
        ),
        f"  training    LoRA r{lora['r']} α{lora['alpha']} dropout {lora['dropout']} on {len(lora['targets'])} "
        f"projections; checkpointing {'on' if c['activation_checkpointing'] else 'off'}; {c['optimizer']}",
        f"  data        batch {c['batch']} × {c['seq_len']} tokens, packed documents of {c['doc_len']}; "
        f"{c['warmup_steps']} warm-up + {c['steps']} timed steps",
        "  versions    " + ", ".join(f"{k} {v}" for k, v in c["versions"].items()),
        "",
        f"  {'':<13}{'layers':>6}{'params':>10}{'tokens/s':>11}{'s/step':>9}{'MFU 6N':>8}{'MFU 4N+2N':>11}"
        f"{'peak memory':>22}",
    ]
    for label, row in (("measured", m), ("extrapolated", report["extrapolated"])):
        memory = "n/a" if row["peak_memory_bytes"] is None else f"{row['peak_memory_bytes'] / GIB:.2f} GiB"
        if label == "extrapolated" and row["peak_memory_bytes"] is not None:
            memory += " (extrapolated)"
        lines.append(
            f"  {label:<13}{row['layers']:>6}{_count(row['parameters']):>10}{_num(row['tokens_per_s'], ',.0f'):>11}"
            f"{_num(row['seconds_per_step'], '.3f'):>9}{_num(row['mfu_6n'], '.1%'):>8}"
            f"{_num(row['mfu_4n_2n'], '.1%'):>11}{memory:>22}"
        )
    lines += [
        "",
        f"  loss {m['loss_first']:.3f} → {m['loss_last']:.3f}; outside the layers "
        f"{m['fixed_part_seconds_per_token'] * 1e6:.2f} µs/token",
        *(f"  {name}: {text}" for name, text in report["formulas"].items()),
        *format_ranks(report),
    ]
    return "\n".join(lines)


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _count(value: int) -> str:
    return f"{value / 1e9:.2f}B" if value >= 1e9 else f"{value / 1e6:.2f}M"

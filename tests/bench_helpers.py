"""Bench reports for tests: shaped as `python -m engine bench --json` prints one on a GPU."""

from __future__ import annotations

from typing import Any

H100 = "NVIDIA H100 80GB HBM3"
N_70B = 70_553_706_496  # Llama 3 70B's parameters, as the bench counts them


def gpu_report(device_name: str = H100, tokens_per_s: float | None = 1000.0, **conditions: Any) -> dict[str, Any]:
    """A report shaped as `python -m engine bench --json` prints one on a GPU (the fields calibration reads)."""
    line = {"tokens_per_s": tokens_per_s, "seconds_per_step": 4.0, "mfu_6n": 0.43}
    return {
        "conditions": {
            "device": "cuda",
            "device_name": device_name,
            "layers": 4,
            "target_layers": 80,
            "seq_len": 4096,
            "doc_len": 1024,
            "batch": 1,
            "load_in_4bit": True,
            "activation_checkpointing": True,
            "optimizer": "paged_adamw_8bit",
            "toy": False,
            "versions": {"torch": "2.13.0+cu128"},
            **conditions,
        },
        "measured": {**line, "layers": 4, "parameters": 4_478_000_000, "tokens_per_s": (tokens_per_s or 0) * 15},
        "extrapolated": {**line, "layers": 80, "parameters": N_70B},
        "formulas": {},
    }

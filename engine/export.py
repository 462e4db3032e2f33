"""Merged exports: the base model with a job's adapter folded into its weights, saved as bf16 safetensors.

``python -m engine merge --adapter DIR --base MODEL --out DIR`` loads the base model in bf16 (never 4-bit:
merging into quantized weights rounds the adapter away) on the CPU, or with CUDA spread over the GPUs and CPU
RAM (``device_map="auto"``, as a merge pod does), applies the adapter with PEFT, merges it
(``merge_and_unload``) and saves the plain transformers model with the adapter's tokenizer and chat template.
The result loads with ``AutoModelForCausalLM.from_pretrained`` alone and serves with vLLM without LoRA.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from engine import EngineError


class MergeError(EngineError):
    """A merge that cannot be done: no adapter, too little disk, or a base model that cannot be loaded."""


def merged_bytes(parameters: int) -> int:
    """What the merged bf16 weights take on disk: two bytes a parameter."""
    return parameters * 2


def merge_adapter(adapter_dir: Path, base_model: str, out_dir: Path, *, token: str | None = None) -> dict[str, Any]:
    """Merge ``adapter_dir`` into ``base_model`` and save it in ``out_dir``; what was written, with sizes."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter_dir / "adapter_config.json").is_file():
        raise MergeError(f"{adapter_dir}: no adapter_config.json (not an adapter folder)")
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16, "token": token}
    if torch.cuda.is_available():
        # A pod's GPUs and CPU RAM hold the bf16 base between them: a 70B needs neither all of one nor the other.
        kwargs["device_map"] = "auto"
    try:
        base = AutoModelForCausalLM.from_pretrained(base_model, **kwargs)
    except OSError as exc:
        raise MergeError(f"base model {base_model}: cannot be loaded ({str(exc).splitlines()[0]})") from None
    need = merged_bytes(sum(p.numel() for p in base.parameters()))
    out_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir).free
    if need * 1.05 > free:
        raise MergeError(
            f"{out_dir}: the merged weights need {need / 1e9:.1f} GB and the disk has {free / 1e9:.1f} GB free"
        )
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    # How it was loaded here (offline on a pod) is not the model's to carry: the same merge saves the same files.
    tokenizer.init_kwargs.pop("local_files_only", None)
    tokenizer.save_pretrained(out_dir)
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    return {
        "path": str(out_dir),
        "base_model": base_model,
        "dtype": "bfloat16",
        "files": {str(p.relative_to(out_dir)): p.stat().st_size for p in files},
    }


def main(adapter_dir: Path, base_model: str, out_dir: Path, models_dir: Path | None) -> int:
    """The CLI: merge, then print one JSON line saying what was written (exit 1 with the reason otherwise)."""
    import os
    import sys

    from engine.model import resolve_base_model

    try:
        base = resolve_base_model(base_model, models_dir or out_dir.parent / "models")
        result = merge_adapter(adapter_dir, base, out_dir, token=os.environ.get("HF_TOKEN") or None)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0

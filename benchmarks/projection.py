"""The 242-conversation 70B run projected: its tokens counted with the dataset code, its time and cost modelled.

A 242-conversation brightrun file is made by repeating the real conversations (each copy with a fresh
conversation id); the balanced preset's conversion (conversations mode, its max_seq_length, 10% held out)
and the Llama 3 chat template count the tokens one epoch trains on, with a local tokenizer. The cost model
then projects the 70B run on one H100 SXM, beside the FLOP-bound ideal (6·N·tokens at 100% and at a stated
MFU). Token counts depend on the tokenizer, and Llama 3's own is not on this machine (nothing is downloaded):
the demo tokenizer (byte-level BPE, 4,096 tokens, trained on these very texts) counts them, and the dataset
code's ≈4-characters-per-token estimate is given beside it.
"""

from __future__ import annotations

import copy
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import presets
from benchmarks.dataset import REAL, REAL_FILES, SAMPLE, _texts
from engine.config import JobSpec
from engine.dataset import ChatTokenizer, ConvertOptions, prepare
from engine.dataset.stats import DatasetStats, dataset_stats
from engine.demo import DEMO_VOCAB_SIZE, build_demo_tokenizer
from store.projection import DEFAULT_MFU, RunProjection, project_run

CONVERSATIONS = 242
PRESET = "balanced"
GPU = "NVIDIA H100 80GB HBM3"
# N of Llama 3 70B (80 layers, embedding, final norm, untied lm_head), as `python -m engine bench` counts it.
LLAMA3_70B_PARAMETERS = 70_553_706_496
# The seed's expectation for this run, for contrast.
SEED_EXPECTATION = "8–12 h and $25–75"


def sources() -> tuple[list[Path], str]:
    """The real brightrun files when they are here, else the project's synthetic sample; and which."""
    real = [REAL / name for name in REAL_FILES if (REAL / name).exists()]
    if real:
        return real, f"real conversations of {' and '.join(p.name for p in real)}"
    return [SAMPLE], f"the synthetic sample {SAMPLE.name} ({REAL} is missing)"


def build_file(paths: list[Path], count: int, out: Path) -> int:
    """A brightrun file of ``count`` conversations: those of ``paths`` in turn, repeated, each with a fresh id.

    Returns the number of distinct conversations it repeats."""
    documents = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    originals = [conversation for document in documents for conversation in document["conversations"]]
    conversations = []
    for index in range(count):
        conversation = copy.deepcopy(originals[index % len(originals)])
        conversation["conversation_metadata"]["conversation_id"] = str(uuid.UUID(int=index))
        conversations.append(conversation)
    document = documents[0]
    document["conversations"] = conversations
    metadata = document.get("training_file_metadata") or {}
    metadata["total_conversations"] = count
    metadata["total_training_pairs"] = sum(len(c["training_pairs"]) for c in conversations)
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    return len(originals)


def count_tokens(path: Path, spec: JobSpec, tokenizer: ChatTokenizer | None) -> DatasetStats:
    """One epoch of ``path`` as the spec's job would train it (its train split, packed as it packs)."""
    options = ConvertOptions.from_spec(spec.dataset, spec.hyperparameters.max_seq_length)
    return dataset_stats(prepare(path, options, tokenizer=tokenizer), spec.hyperparameters)


def _range(values: tuple[float, float], unit: str = "") -> str:
    return f"{values[0]:,.1f}–{values[1]:,.1f}{unit}"


def _projection_rows(projection: RunProjection, how_counted: str) -> list[dict[str, Any]]:
    est = projection.estimate
    mfu_low, mfu_high = projection.implied_mfu
    price = f"${est.price_per_gpu_hour:.2f}/GPU-h ({est.price_source})"
    where = f"1 × {est.gpu_label}, {est.cloud_type.lower()} cloud at {price}"
    ideal_note = (
        f"6·N·tokens = {projection.flops:.3g} FLOPs, N = {projection.parameters:,.0f} (Llama 3 70B), "
        f"peak {projection.peak_tflops:g} TFLOP/s dense bf16; training alone, no overheads; {where}"
    )
    return [
        {
            "name": "projected 70B balanced run (242 conversations): wall time",
            "value": _range(est.hours),
            "unit": f"h (training {_range(est.training_hours)} h + overheads {_range(est.overhead_hours)} h)",
            "conditions": (
                f"{est.tokens:,} trained tokens ({how_counted}) at {est.tokens_per_second[0]:,.0f}–"
                f"{est.tokens_per_second[1]:,.0f} tokens/s, resting on {est.throughput_source}; overheads: pod "
                f"start, weight download and load, evaluation, upload; {where}; the seed expected "
                f"{SEED_EXPECTATION}"
            ),
        },
        {
            "name": "projected 70B balanced run (242 conversations): cost",
            "value": f"${est.cost[0]:,.2f}–${est.cost[1]:,.2f}",
            "unit": "USD",
            "conditions": f"as above: {where}",
        },
        {
            "name": "FLOP-bound ideal at 100% MFU",
            "value": f"{projection.ideal_hours() * 60:,.1f}",
            "unit": f"min, ${projection.ideal_cost():,.2f}",
            "conditions": ideal_note,
        },
        {
            "name": f"FLOP-bound ideal at {projection.mfu:.0%} MFU",
            "value": f"{projection.ideal_hours(projection.mfu) * 60:,.1f}",
            "unit": f"min, ${projection.ideal_cost(projection.mfu):,.2f}",
            "conditions": f"{projection.mfu:.0%}: what well-tuned dense bf16 training reaches on an H100; as above",
        },
        {
            "name": "MFU implied by the estimate's throughput",
            "value": f"{mfu_low:.1%}–{mfu_high:.1%}",
            "unit": "of the dense bf16 peak, by 6·N",
            "target": "≥ 1,100 tokens/s per H100 (≈47% by 6·N)",
            "conditions": f"the estimate's tokens/s × 6·N ÷ peak; resting on {est.throughput_basis['kind']}",
        },
    ]


def run() -> list[dict[str, Any]]:
    paths, origin = sources()
    spec = presets.get(PRESET).to_spec("projection.json")
    hp = spec.hyperparameters
    model_b = spec.parameters_b()
    assert model_b is not None, f"the {PRESET} preset names no model size"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        big = workdir / f"brightrun-{CONVERSATIONS}-conversations.json"
        distinct = build_file(paths, CONVERSATIONS, big)
        build_demo_tokenizer([text for path in paths for text in _texts(path)], workdir / "tokenizer")
        tokenizer = ChatTokenizer.load(workdir / "tokenizer")
        counted = count_tokens(big, spec, tokenizer)
        estimated = count_tokens(big, spec, None)
    tokenizer_note = (
        f"demo tokenizer: byte-level BPE, {DEMO_VOCAB_SIZE:,} tokens, trained on the text of the source files, "
        "with the Llama 3 special tokens and chat template; counts depend on the tokenizer"
    )
    made = f"{CONVERSATIONS} conversations made by repeating the {distinct} {origin}"
    preset_note = (
        f"{PRESET} preset: {counted.mode} mode, max_seq_length {counted.max_seq_length:,}, packing "
        f"{'on' if counted.packing else 'off'}, {counted.epochs} epochs, {spec.dataset.eval_fraction:.0%} of "
        "conversations held out"
    )
    total = counted.train_tokens * counted.epochs
    total_estimated = estimated.train_tokens * estimated.epochs
    projection = project_run(total, model_b, GPU, parameters=LLAMA3_70B_PARAMETERS, mfu=DEFAULT_MFU)
    by_characters = project_run(total_estimated, model_b, GPU, parameters=LLAMA3_70B_PARAMETERS, mfu=DEFAULT_MFU)
    ratio = total / total_estimated
    results: list[dict[str, Any]] = [
        {
            "name": "242-conversation file: tokens per epoch (balanced)",
            "value": f"{counted.train_tokens:,}",
            "unit": (
                f"tokens, {counted.train_examples} of {counted.examples} examples in the train split; "
                f"{counted.packed_sequences} packed sequences ({counted.padding_waste or 0:.1%} room empty), "
                f"{counted.steps_per_epoch} steps per epoch at {hp.batch_size} × {hp.gradient_accumulation_steps}"
            ),
            "conditions": f"{made}; {preset_note}; {tokenizer_note}",
        },
        {
            "name": "242-conversation balanced run: trained tokens, all epochs",
            "value": f"{total:,}",
            "unit": f"tokens ({counted.epochs} epochs; {counted.trained_tokens.total:,} per pass carry the loss)",
            "conditions": f"as above; {tokenizer_note}",
        },
        {
            "name": "242-conversation balanced run: trained tokens at ≈4 characters per token",
            "value": f"{total_estimated:,}",
            "unit": f"tokens ({estimated.train_tokens:,} per epoch)",
            "conditions": (
                f"the dataset code's character estimate; the demo tokenizer counts {ratio:.2f}× as many; Llama 3's "
                f"own tokenizer is not on this machine; projected: {_range(by_characters.estimate.hours)} h, "
                f"${by_characters.estimate.cost[0]:,.2f}–${by_characters.estimate.cost[1]:,.2f}"
            ),
        },
    ]
    return results + _projection_rows(projection, "demo tokenizer")

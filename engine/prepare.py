"""The preprocessing stage: convert, split and tokenize the dataset, and count the optimizer steps it makes.

Examples are tokenized here, once, with the same Llama 3 rendering the previews show (engine.dataset), and
handed to the trainer pre-tokenized with their assistant masks, so what is trained is exactly what was
validated and previewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.checksums import sha256_stream
from engine.config import JobSpec
from engine.dataset import ChatTokenizer, ConvertOptions, DatasetError, convert_file, load_examples
from engine.dataset.source import open_regular
from engine.dataset.stats import pack_best_fit_decreasing, steps_for
from engine.evaluation import EvalItem
from engine.workdir import Workdir

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase


@dataclass
class Prepared:
    train: Dataset
    evaluation: Dataset | None
    eval_items: list[EvalItem]
    system_prompt: str | None
    stats: dict[str, Any]


def _check_source(spec: JobSpec) -> Path:
    path = Path(spec.dataset.dataset_path)
    if not path.exists():
        raise DatasetError(f"{path}: the dataset file is not there")
    expected = spec.dataset.dataset_sha256
    with open_regular(path) as handle:
        actual = sha256_stream(handle) if expected else ""
    if expected and actual != expected:
        raise DatasetError(
            f"{path}: the file changed since the job was created (sha256 {actual[:12]}…, expected "
            f"{expected[:12]}…); start a new job for the new data"
        )
    return path


def prepare(
    spec: JobSpec, workdir: Workdir, tokenizer: PreTrainedTokenizerBase, *, world_size: int = 1, convert: bool = True
) -> Prepared:
    """The job's examples, tokenized, and what they make: ``convert`` False reads the workdir's converted dataset
    as another rank wrote it."""
    from datasets import Dataset

    hp = spec.hyperparameters
    # The source is checked before anything else touches it (a FIFO or a device is refused by name).
    source = _check_source(spec) if convert else Path(spec.dataset.dataset_path)
    chat = ChatTokenizer(tokenizer.backend_tokenizer)
    if convert:
        options = ConvertOptions.from_spec(spec.dataset, hp.max_seq_length)
        convert_file(source, workdir.dataset, options, tokenizer=chat)
    train_examples, eval_examples, manifest = load_examples(workdir.dataset)
    if not train_examples:
        raise DatasetError(f"{source}: no trainable examples after conversion")

    def encode(examples: list[Any]) -> list[dict[str, list[int]]]:
        rows = []
        for example in examples:
            encoded = chat.encode(example.messages)
            rows.append({"input_ids": encoded.input_ids, "assistant_masks": encoded.assistant_mask})
        return rows

    train_rows = encode(train_examples)
    eval_rows = encode(eval_examples)
    eval_items = [
        EvalItem(r["input_ids"], r["assistant_masks"], dict(e.meta), list(e.messages))
        for r, e in zip(eval_rows, eval_examples, strict=True)
    ]
    lengths = [len(r["input_ids"]) for r in train_rows]
    packs = len(pack_best_fit_decreasing(lengths, hp.max_seq_length)) if hp.packing else len(lengths)
    steps_per_epoch = steps_for(packs, hp.batch_size, hp.gradient_accumulation_steps, world_size)
    system = next((m["content"] for m in train_examples[0].messages if m["role"] == "system"), None)
    stats = {
        "examples": len(train_examples) + len(eval_examples),
        "train_examples": len(train_examples),
        "eval_examples": len(eval_examples),
        "tokens": sum(lengths),
        "supervised_tokens": sum(sum(r["assistant_masks"]) for r in train_rows),
        "packed_sequences": packs,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * hp.num_epochs,
        "epochs": hp.num_epochs,
        "repairs": manifest.repairs,
    }
    return Prepared(
        train=Dataset.from_list(train_rows),
        evaluation=Dataset.from_list(eval_rows) if eval_rows else None,
        eval_items=eval_items,
        system_prompt=system,
        stats=stats,
    )

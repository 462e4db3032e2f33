"""Dataset statistics: tokens per example, padding waste under TRL's packing, and optimizer steps per epoch."""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from engine.config import Hyperparameters
from engine.dataset.pipeline import Prepared

# TRL packs with datasets.map(batched=True): best-fit decreasing within each batch of this many examples.
TRL_PACKING_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Spread:
    total: int
    min: int
    median: float
    p95: int
    max: int

    @classmethod
    def of(cls, values: Sequence[int]) -> Spread:
        if not values:
            return cls(0, 0, 0.0, 0, 0)
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
        return cls(sum(ordered), ordered[0], statistics.median(ordered), p95, ordered[-1])


def pack_best_fit_decreasing(lengths: Sequence[int], capacity: int, batch: int = TRL_PACKING_BATCH) -> list[int]:
    """The fill of each packed sequence, as TRL's default ``bfd`` packing makes them (longer examples truncated)."""
    bins: list[int] = []
    for first in range(0, len(lengths), batch):
        free: list[int] = []  # remaining space of this batch's open sequences, sorted
        filled: list[int] = []
        for length in sorted((min(n, capacity) for n in lengths[first : first + batch] if n > 0), reverse=True):
            i = bisect_left(free, length)  # the tightest sequence it fits in
            if i < len(free):
                space = free.pop(i)
                filled[filled.index(capacity - space)] += length
            else:
                space = capacity
                filled.append(length)
            if space - length > 0:
                insort(free, space - length)
        bins.extend(filled)
    return bins


def steps_for(sequences: int, batch_size: int, accumulation: int, ranks: int = 1) -> int:
    """Optimizer steps per epoch, the one count every figure uses: each step takes the global batch, batch_size ×
    gradient_accumulation_steps sequences on each of ``ranks`` GPUs."""
    return max(1, math.ceil(sequences / (batch_size * accumulation * ranks)))


@dataclass(frozen=True, slots=True)
class DatasetStats:
    mode: str
    max_seq_length: int
    tokens_estimated: bool
    tokenizer: str
    examples: int
    train_examples: int
    eval_examples: int
    tokens: Spread  # per example, all tokens
    trained_tokens: Spread  # per example, the tokens with a loss
    train_tokens: int  # one epoch's tokens
    packing: bool
    packed_sequences: int  # train split, after packing (or one per example without packing)
    padding_waste: float | None  # packing: 1 − tokens / (packed sequences × max_seq_length); None without
    batch_size: int
    gradient_accumulation_steps: int
    gpu_count: int
    steps_per_epoch: int
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_stats(prepared: Prepared, hyperparameters: Hyperparameters, gpu_count: int = 1) -> DatasetStats:
    """What one epoch of the prepared dataset costs under a preset's batch shape and sequence length."""
    train = prepared.train
    lengths = [e.meta["tokens"] for e in train]
    capacity = prepared.options.max_seq_length
    sequences = pack_best_fit_decreasing(lengths, capacity) if hyperparameters.packing else lengths
    slots = len(sequences) * capacity
    return DatasetStats(
        mode=prepared.options.mode.value,
        max_seq_length=capacity,
        tokens_estimated=prepared.counter.estimated,
        tokenizer=prepared.counter.name,
        examples=len(prepared.examples),
        train_examples=len(train),
        eval_examples=len(prepared.examples) - len(train),
        tokens=Spread.of([e.meta["tokens"] for e in prepared.examples]),
        trained_tokens=Spread.of([e.meta["trained_tokens"] for e in prepared.examples]),
        train_tokens=sum(lengths),
        packing=hyperparameters.packing,
        packed_sequences=len(sequences),
        padding_waste=(1 - sum(sequences) / slots if slots else 0.0) if hyperparameters.packing else None,
        batch_size=hyperparameters.batch_size,
        gradient_accumulation_steps=hyperparameters.gradient_accumulation_steps,
        gpu_count=gpu_count,
        steps_per_epoch=steps_for(
            len(sequences), hyperparameters.batch_size, hyperparameters.gradient_accumulation_steps, gpu_count
        ),
        epochs=hyperparameters.num_epochs,
    )

"""Packed documents stay apart under every attention kernel a CPU runs, and ``auto`` keeps a micro-step's rows as
rows: no mask over the flattened batch reaches the attention."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.workdir import Workdir
from tests.engine_helpers import SAMPLE, tiny_spec

# Two rows of packed documents as TRL's best-fit packing makes them, the second one shorter (padded).
ROWS = [[40, 25, 31], [50, 20]]
KERNELS = ["eager", "sdpa", "flex_attention"]


@pytest.fixture
def uncompiled_flex(monkeypatch: pytest.MonkeyPatch) -> None:
    """flex_attention as transformers calls it, without torch.compile: compiling it takes minutes on 2 CPUs, while
    the masks it is given, which decide what a token sees, come from the same code."""
    import transformers.integrations.flex_attention as flex
    import transformers.masking_utils as masking
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def eager_flex(query: Any, key: Any, value: Any, training: bool = False, **kwargs: Any) -> Any:
        return flex_attention(query, key, value, **kwargs)

    def uncompiled_block_mask(*args: Any, _compile: bool = False, **kwargs: Any) -> Any:
        return create_block_mask(*args, _compile=False, **kwargs)

    monkeypatch.setattr(flex, "compile_friendly_flex_attention", eager_flex)
    monkeypatch.setattr(masking, "create_block_mask", uncompiled_block_mask)


def _documents(vocab: int) -> list[list[Any]]:
    import torch

    generator = torch.Generator().manual_seed(0)
    return [[torch.randint(10, vocab, (n,), generator=generator) for n in row] for row in ROWS]


def _batch(documents: list[list[Any]], *, flattened: bool, pad: int) -> dict[str, Any]:
    """The batch the trainer hands the model: lorapod's rows, or TRL's padding-free flattened row."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from engine.packed_rows import TOKEN_MASK, PackedRowsCollator

    examples = [
        {"input_ids": [int(t) for doc in row for t in doc], "seq_lengths": [len(doc) for doc in row]}
        for row in documents
    ]
    collate = DataCollatorForLanguageModeling(pad, padding_free=True) if flattened else PackedRowsCollator(pad)
    batch = collate(examples)
    batch.pop(TOKEN_MASK, None)
    return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("flattened", [False, True], ids=["rows", "flattened"])
def test_a_document_in_a_packed_batch_sees_only_itself(
    demo_model: Path, kernel: str, flattened: bool, request: pytest.FixtureRequest
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    if kernel == "flex_attention":
        request.getfixturevalue("uncompiled_flex")
    model = AutoModelForCausalLM.from_pretrained(demo_model, attn_implementation=kernel).eval()
    assert model.config._attn_implementation == kernel
    documents = _documents(model.config.vocab_size)
    batch = _batch(documents, flattened=flattened, pad=0)
    with torch.no_grad():
        logits = model(**batch, use_cache=False).logits
        for r, row in enumerate(documents):
            start = sum(sum(len(d) for d in earlier) for earlier in documents[:r]) if flattened else 0
            for doc in row:
                alone = model(input_ids=doc.unsqueeze(0), use_cache=False).logits[0]
                inside = logits[0 if flattened else r, start : start + len(doc)]
                torch.testing.assert_close(inside, alone, atol=1e-5, rtol=1e-4)
                start += len(doc)


class AttentionProbe:
    """Records the query and mask shapes of every sdpa call transformers makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...] | None, bool]] = []

    def record(self, original: Any) -> Any:
        def sdpa(query: Any, key: Any, value: Any, attn_mask: Any = None, **kwargs: Any) -> Any:
            mask = None if attn_mask is None else tuple(attn_mask.shape)
            self.calls.append((tuple(query.shape), mask, bool(kwargs.get("is_causal"))))
            return original(query, key, value, attn_mask=attn_mask, **kwargs)

        return sdpa

    def widest_mask(self) -> int:
        return max((mask[-1] for _, mask, _ in self.calls if mask is not None), default=0)


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[AttentionProbe]:
    import torch

    found = AttentionProbe()
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", found.record(
        torch.nn.functional.scaled_dot_product_attention
    ))  # fmt: skip
    yield found


@pytest.fixture(scope="module")
def auto_trainer(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The engine's trainer for a packed job with attn_implementation=auto on this CPU, 2 rows of 512 a step."""
    from engine.model import load_model, load_tokenizer
    from engine.prepare import prepare
    from engine.training import Progress, build_trainer

    spec = tiny_spec(demo_model, SAMPLE, "attn_implementation=auto", "batch_size=2", "eval_fraction=0")
    workdir = Workdir(tmp_path_factory.mktemp("auto"))
    tokenizer = load_tokenizer(str(demo_model), None)
    prepared = prepare(spec, workdir, tokenizer)
    trainer, _ = build_trainer(
        spec, workdir, load_model(spec, str(demo_model), None), tokenizer, prepared.train, None,
        emit=lambda event: None, progress=Progress(), should_stop=lambda: None, use_cpu=True,
    )  # fmt: skip
    return trainer


def _multi_document_batch(trainer: Any) -> dict[str, Any]:
    for batch in trainer.get_train_dataloader():
        rows, documents = batch["input_ids"].shape[0], int((batch["position_ids"] == 0).sum())
        if rows == 2 and documents > rows:
            return dict(batch)
    raise AssertionError("no micro-step of two rows holding several documents")


def test_auto_on_a_cpu_keeps_the_rows_and_builds_no_mask_over_the_flattened_batch(
    auto_trainer: Any, probe: AttentionProbe
) -> None:
    import torch

    model = auto_trainer.model
    assert model.config._attn_implementation == "sdpa"
    batch = _multi_document_batch(auto_trainer)
    rows, length = batch["input_ids"].shape
    assert rows == 2 and length <= 512  # the batch reaching the model keeps its rows

    model.train()
    loss = auto_trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()})
    assert torch.isfinite(loss)
    assert probe.calls, "the model never called sdpa"
    for query, mask, _ in probe.calls:
        assert query[0] == rows and query[2] == length
        assert mask is None or mask == (rows, 1, length, length)
    assert probe.widest_mask() == length < rows * length

    # What the probe sees when the same rows are flattened, as TRL's own collator does: one row, one square mask
    # over every token of the micro-step.
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    probe.calls.clear()
    flat = DataCollatorForLanguageModeling(auto_trainer.processing_class.pad_token_id, padding_free=True)
    examples = [{"input_ids": _real(batch, r), "seq_lengths": _lengths(batch, r)} for r in range(rows)]
    flattened = flat(examples)
    total = flattened["input_ids"].shape[1]
    with torch.no_grad():
        model(input_ids=flattened["input_ids"], position_ids=flattened["position_ids"], use_cache=False)
    assert probe.widest_mask() == total > length


def test_kept_rows_train_as_the_flattened_batch_does_and_count_every_real_token(auto_trainer: Any) -> None:
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = auto_trainer.model
    model.train()
    torch.manual_seed(0)
    batch = _multi_document_batch(auto_trainer)
    rows = batch["input_ids"].shape[0]
    real_tokens = int(batch["attention_mask"].sum())
    assert real_tokens < batch["input_ids"].numel()  # the shorter row is padded

    before = auto_trainer._total_train_tokens
    auto_trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()})
    assert auto_trainer._total_train_tokens - before == real_tokens  # what tokens/s is computed from

    examples = [
        {"input_ids": _real(batch, r), "seq_lengths": _lengths(batch, r), "labels": _real(batch, r, "labels")}
        for r in range(rows)
    ]
    flattened = DataCollatorForLanguageModeling(auto_trainer.processing_class.pad_token_id, padding_free=True)(examples)
    assert int((flattened["labels"] != -100).sum()) == int((batch["labels"] != -100).sum())
    model.eval()  # no LoRA dropout: both layouts see the same weights
    try:
        with torch.no_grad():
            kept = auto_trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()})
            flat_loss = auto_trainer.compute_loss(model, flattened)
    finally:
        model.train()
    torch.testing.assert_close(kept, flat_loss, atol=1e-5, rtol=1e-5)


def _real(batch: dict[str, Any], row: int, key: str = "input_ids") -> list[int]:
    keep = batch["attention_mask"][row].bool()
    return [int(t) for t in batch[key][row][keep]]


def _lengths(batch: dict[str, Any], row: int) -> list[int]:
    positions = batch["position_ids"][row][batch["attention_mask"][row].bool()].tolist()
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    return [b - a for a, b in itertools.pairwise(starts)]

"""Packed rows kept as rows: the batch and the trainer for an attention kernel without varlen support.

TRL packs examples into rows of ``max_seq_length`` tokens (best-fit decreasing) and then, always, flattens a
micro-step's rows into one padding-free row of ``batch_size × max_seq_length`` tokens, with position ids that
restart at each document. FlashAttention's varlen kernel reads the document boundaries from those and attends
within each document. sdpa and eager cannot: transformers (``masking_utils.create_causal_mask``) finds the
documents from the position ids and builds a dense boolean mask over the whole flattened row, 16,384² entries at
4 × 4096, and the kernel computes every one of them: 4× the attention of four rows of 4,096.

Here the rows stay rows. Each one carries position ids that restart at each document and no attention mask, so
transformers builds a mask per row (``batch × 1 × L × L``) that keeps every document to itself; a row that holds
a single document needs none (sdpa runs ``is_causal``). Padding at a row's end is its own documents, after the
real tokens, and out of the loss.
"""

from __future__ import annotations

from typing import Any

from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from engine.weighted_eval import TokenWeightedSFTTrainer

# The 2D padding mask travels beside the batch under this name, for counting tokens only: handed to the model it
# would replace the per-document mask by a plain padding mask and let documents see each other.
TOKEN_MASK = "attention_mask"


class PackedRowsCollator(DataCollatorForLanguageModeling):
    """TRL's collator without its flattening: one row per packed sequence, position ids restarting per document."""

    def __init__(self, pad_token_id: int) -> None:
        super().__init__(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        # A document's first token is not predicted from the one before it, which belongs to another document
        # (TRL's padding-free batch masks the same labels).
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch


class PackedRowsTrainer(TokenWeightedSFTTrainer):
    """SFTTrainer fed by PackedRowsCollator: the model sees no attention mask, the token count still does."""

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        tokens = inputs.pop(TOKEN_MASK, None)
        counted = self._total_train_tokens
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if tokens is not None and model.training:
            # SFTTrainer counts one row's length when it sees position ids and no mask: count every real token.
            real = int(self.accelerator.gather_for_metrics(tokens.sum()).sum().item())
            self._total_train_tokens = counted + real // self._tp_size
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return result

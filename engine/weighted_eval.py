"""TRL's SFTTrainer with a token-weighted periodic eval loss: the mean over every held-out trained token, as the
final evaluation (engine.evaluation) computes it, not the trainer's mean of per-batch means."""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer


class TokenWeightedSFTTrainer(SFTTrainer):
    """Each eval batch's loss is weighed by the tokens it was computed on (the labels that are not -100)."""

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        self._eval_sums = torch.zeros(2, dtype=torch.float64, device=self.args.device)
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        # Every rank's sums; with several ranks a last short batch may repeat a few examples (accelerate pads it).
        nll, tokens = (float(v) for v in self.accelerator.reduce(self._eval_sums, reduction="sum"))
        if tokens > 0 and output.metrics is not None:
            output.metrics[f"{metric_key_prefix}_loss"] = nll / tokens
        return output

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> Any:
        labels = inputs.get("labels")
        loss, logits, out_labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if loss is not None and labels is not None:
            # The loss is the mean over the shifted labels that are not -100; weigh it back into a sum.
            tokens = (labels[..., 1:] != -100).sum().to(self._eval_sums.device, torch.float64)
            self._eval_sums += torch.stack([loss.detach().to(self._eval_sums.device, torch.float64) * tokens, tokens])
        return loss, logits, out_labels

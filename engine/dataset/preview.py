"""One example exactly as the model sees it, cut into runs of trained and untrained text."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from engine.dataset.model import Example
from engine.dataset.tokens import ChatTokenizer, trained_spans


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    trained: bool


@dataclass(frozen=True, slots=True)
class Preview:
    segments: list[Segment]
    tokens: int
    trained: int
    estimated: bool  # no tokenizer: trained character spans, token counts from the estimate


def preview_example(example: Example, tokenizer: ChatTokenizer | None = None) -> Preview:
    """The rendered Llama 3 text of ``example`` in runs that are trained or not.

    With a tokenizer the runs follow token boundaries (what the trainer's mask says, token by token, the
    closing <|eot_id|> included); without one they follow the trained character spans.
    """
    if tokenizer is not None:
        encoded = tokenizer.encode(example.messages)
        cuts = [(offset, bool(flag)) for offset, flag in zip(encoded.offsets, encoded.assistant_mask, strict=True)]
        return Preview(_runs(encoded.text, cuts), len(encoded.input_ids), encoded.trained, False)
    text, spans = trained_spans(example.messages)
    cuts = [(0, False)]
    for start, end in spans:
        cuts += [(start, True), (end, False)]
    return Preview(_runs(text, cuts), example.meta["tokens"], example.meta["trained_tokens"], True)


def _runs(text: str, cuts: list[tuple[int, bool]]) -> list[Segment]:
    """Text split at each (offset, trained) cut, neighbours with the same flag merged."""
    segments: list[Segment] = []
    cuts = [*cuts, (len(text), False)]
    for (start, trained), (end, _) in pairwise(cuts):
        if end <= start:
            continue
        piece = text[start:end]
        if segments and segments[-1].trained == trained:
            segments[-1] = Segment(segments[-1].text + piece, trained)
        else:
            segments.append(Segment(piece, trained))
    return segments

"""Tokens as the trainer sees them: Llama 3 chat text encoded once, with the mask of tokens that are learned.

``ChatTokenizer.encode`` is what the engine hands TRL (a pre-tokenized dataset of ``input_ids`` and
``assistant_masks``), so the preview, the statistics and the trainer all see the very same tokens. Without a
tokenizer, ``CharEstimate`` counts about one token per four characters, and says so.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from engine.chat import EOT, SPECIAL_TOKENS, Message, header, render
from engine.dataset.errors import TokenizerError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

CHARS_PER_TOKEN = 4
# A message's template tokens: <|start_header_id|>, the role, <|end_header_id|>, "\n\n" and <|eot_id|>.
TEMPLATE_TOKENS_PER_MESSAGE = 5


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    assistant_mask: list[int]  # 1 where the loss is computed: trained assistant content and its <|eot_id|>
    offsets: list[int]  # character offset where each token starts in ``text``
    text: str

    @property
    def trained(self) -> int:
        return sum(self.assistant_mask)


def trained_spans(messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans trained: each assistant turn not marked ``weight: 0``."""
    rendered = render(messages)
    assistants = [m for m in messages if m["role"] == "assistant"]
    spans = [
        span for span, message in zip(rendered.trained_spans, assistants, strict=True) if message.get("weight", 1) != 0
    ]
    return rendered.text, spans


def mask_from_offsets(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """1 for the tokens of each span: from the token holding its first character to the one holding its last.

    That is every token that starts inside the span, and also, as in Hugging Face's
    return_assistant_tokens_mask, a whitespace token inside a reply whose offsets a tokenizer trimmed to
    nothing (``trim_offsets``).
    """
    starts = [start for start, _ in offsets]
    mask = [0] * len(offsets)
    for first_char, end_char in spans:
        first = _token_at(offsets, starts, first_char)
        last = _token_at(offsets, starts, end_char - 1)
        if first is None or last is None:
            continue
        mask[first : last + 1] = [1] * (last + 1 - first)
    return mask


def _token_at(offsets: Sequence[tuple[int, int]], starts: Sequence[int], char: int) -> int | None:
    """The first token whose characters include ``char``; None when no token covers it."""
    i = bisect_right(starts, char) - 1
    while i >= 0 and not offsets[i][0] <= char < offsets[i][1]:
        if offsets[i][1] > offsets[i][0]:  # a token with characters, ending before ``char``
            return None
        i -= 1
    if i < 0:
        return None
    while i > 0 and offsets[i - 1][0] <= char < offsets[i - 1][1]:  # one character, several byte tokens
        i -= 1
    return i


class TokenCounter(Protocol):
    """Counts tokens per message, so over-long examples can be split at turn boundaries."""

    name: str
    estimated: bool

    def message_tokens(self, messages: Sequence[Message]) -> list[int]:
        """Tokens of each message as rendered (header, content, <|eot_id|>); an example adds one BOS token."""
        ...


class CharEstimate:
    """No tokenizer: about one token per four characters of text, plus the template's tokens."""

    name = f"estimate (≈{CHARS_PER_TOKEN} characters per token)"
    estimated = True

    def message_tokens(self, messages: Sequence[Message]) -> list[int]:
        return [TEMPLATE_TOKENS_PER_MESSAGE + math.ceil(len(m["content"].strip()) / CHARS_PER_TOKEN) for m in messages]

    def trained_tokens(self, messages: Sequence[Message]) -> int:
        counts = self.message_tokens(messages)
        # Of a trained assistant message: its content and <|eot_id|> (not the four header tokens).
        return sum(
            count - 4
            for count, m in zip(counts, messages, strict=True)
            if m["role"] == "assistant" and m.get("weight", 1) != 0
        )


class ChatTokenizer:
    """A Llama 3 tokenizer (``tokenizers.Tokenizer``) that renders chats and marks the tokens that are learned."""

    estimated = False

    def __init__(self, tokenizer: Tokenizer, name: str = "given tokenizer") -> None:
        missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
        if missing:
            raise TokenizerError(f"{name}: not a Llama 3 tokenizer (it lacks {', '.join(missing)})")
        if tokenizer.truncation is not None or tokenizer.padding is not None:
            # A shared backend tokenizer may carry a caller's truncation: never cut an example silently.
            tokenizer = type(tokenizer).from_str(tokenizer.to_str())
            tokenizer.no_truncation()
            tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.name = name
        self.eot_id = tokenizer.token_to_id(EOT)
        self._cache: dict[tuple[str, str], int] = {}
        self._assistant_header = len(tokenizer.encode(header("assistant"), add_special_tokens=False).ids)

    @classmethod
    def load(cls, path: str | Path) -> ChatTokenizer:
        """From a tokenizer.json file, or a folder holding one (a Hugging Face model folder, the demo's)."""
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        try:
            tokenizer = Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises plain Exception subclasses with terse messages
            reason = "no tokenizer.json there" if not file.exists() else str(exc).splitlines()[0][:200]
            raise TokenizerError(f"cannot load a tokenizer from {path}: {reason}") from None
        return cls(tokenizer, str(path))

    def encode(self, messages: Sequence[Message]) -> Encoded:
        """The Llama 3 text of ``messages`` encoded once; the tokens of each trained span are marked."""
        text, spans = trained_spans(messages)
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        mask = mask_from_offsets(encoding.offsets, spans)
        return Encoded(list(encoding.ids), mask, [start for start, _ in encoding.offsets], text)

    def message_tokens(self, messages: Sequence[Message]) -> list[int]:
        # Every rendered message starts and ends with a special token, and tokenizers never merges across
        # special tokens, so an example's tokens are one BOS plus the sum of its messages' (cached per text).
        keys = [(m["role"], m["content"].strip()) for m in messages]
        todo = list({key: None for key in keys if key not in self._cache})
        if todo:
            texts = [header(role) + content + EOT for role, content in todo]
            for key, encoding in zip(todo, self.tokenizer.encode_batch(texts, add_special_tokens=False), strict=True):
                self._cache[key] = len(encoding.ids)
        return [self._cache[key] for key in keys]

    def trained_tokens(self, messages: Sequence[Message]) -> int:
        counts = self.message_tokens(messages)
        return sum(
            count - self._assistant_header
            for count, m in zip(counts, messages, strict=True)
            if m["role"] == "assistant" and m.get("weight", 1) != 0
        )


def load_counter(tokenizer: ChatTokenizer | str | Path | None) -> ChatTokenizer | CharEstimate:
    """A ChatTokenizer as given or loaded from a path; the character estimate when there is none."""
    if tokenizer is None:
        return CharEstimate()
    if isinstance(tokenizer, ChatTokenizer):
        return tokenizer
    return ChatTokenizer.load(tokenizer)

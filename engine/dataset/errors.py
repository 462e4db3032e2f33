"""The dataset package's exceptions (the tree is drawn in the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import EngineError

if TYPE_CHECKING:
    from engine.dataset.report import ValidationReport


class DatasetError(EngineError):
    """A dataset that cannot be used as asked; ``report`` holds every finding when validation refused it."""

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class TokenizerError(DatasetError):
    """A tokenizer that cannot be loaded, or that lacks the Llama 3 special tokens."""


class OutputError(DatasetError):
    """A converted dataset folder that cannot be written or read back (missing, partial, or from elsewhere)."""

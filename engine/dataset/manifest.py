"""The converted dataset on disk: train.jsonl, eval.jsonl and manifest.json, written whole and read back checked."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.config import DatasetFormat, DatasetMode
from engine.dataset.errors import OutputError
from engine.dataset.model import Example

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
MANIFEST_FILE = "manifest.json"


def lorapod_version() -> str:
    try:
        return metadata.version("lorapod")
    except metadata.PackageNotFoundError:  # the engine alone in a pod image, not installed as a package
        return "unknown"


class SourceInfo(BaseModel):
    path: str
    sha256: str
    size_bytes: int


class Counts(BaseModel):
    conversations: int
    pairs: int
    trainable_pairs: int
    examples: int
    train_examples: int
    eval_examples: int
    tokens: int
    trained_tokens: int
    train_tokens: int  # what one epoch trains on
    tokens_estimated: bool  # True: ≈4 characters per token, no tokenizer was given
    tokenizer: str


class Manifest(BaseModel):
    """What a converted dataset holds and how it was made: exactly what the trainer reads."""

    model_config = ConfigDict(extra="ignore")

    manifest_version: Literal[1] = 1
    lorapod_version: str = Field(default_factory=lorapod_version)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    source: SourceInfo
    format: DatasetFormat
    mode: DatasetMode
    options: dict[str, Any]
    counts: Counts
    split: dict[str, Any]
    repairs: dict[str, Any]
    warnings: list[dict[str, Any]]
    files: dict[str, str] = Field(default_factory=lambda: {"train": TRAIN_FILE, "eval": EVAL_FILE})


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Written under a temporary name and renamed, so ``path`` is whole or untouched; the temporary never stays."""
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with temporary.open("w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(lines)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def write_output(out_dir: Path, train: list[Example], held_out: list[Example], manifest: Manifest) -> None:
    """The three files; the manifest last, so a folder with a manifest is a complete one."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
        for name, examples in ((TRAIN_FILE, train), (EVAL_FILE, held_out)):
            # One line at a time: the examples already hold every text, a list of their JSON would double it.
            _write_atomic(out_dir / name, (json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in examples))
        _write_atomic(out_dir / MANIFEST_FILE, [manifest.model_dump_json(indent=2) + "\n"])
    except (OSError, UnicodeEncodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise OutputError(f"cannot write the converted dataset to {out_dir}: {reason}") from None


def read_output(out_dir: Path) -> tuple[list[Example], list[Example], Manifest]:
    """Train and eval examples and the manifest of a converted dataset; OutputError when incomplete."""
    path = out_dir / MANIFEST_FILE
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise OutputError(
            f"{out_dir}: no {MANIFEST_FILE}, so not a converted dataset (lorapod dataset convert)"
        ) from None
    except (OSError, ValidationError) as exc:
        raise OutputError(f"{path}: unreadable manifest ({str(exc).splitlines()[0]})") from None
    sides = []
    for name, expected in ((TRAIN_FILE, manifest.counts.train_examples), (EVAL_FILE, manifest.counts.eval_examples)):
        examples = _read_examples(out_dir / name)
        if len(examples) != expected:
            raise OutputError(f"{out_dir / name}: {len(examples)} examples, the manifest says {expected}")
        sides.append(examples)
    return sides[0], sides[1], manifest


def _read_examples(path: Path) -> list[Example]:
    examples = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    examples.append(Example(data["messages"], data["meta"]))
                except (ValueError, KeyError, TypeError):
                    raise OutputError(f"{path}: line {number} is not an example") from None
    except OSError as exc:
        raise OutputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return examples

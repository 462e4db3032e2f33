"""The dataset stages the CLI and the engine call: validate a file, convert it, and load what conversion wrote."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.config import DatasetFormat, DatasetMode, DatasetSpec, Hyperparameters
from engine.dataset.checks import check_dataset
from engine.dataset.convert import Repairs, build_examples
from engine.dataset.document import read_document
from engine.dataset.errors import DatasetError
from engine.dataset.jsonl import read_brightrun_lines, read_chat_lines
from engine.dataset.manifest import Counts, Manifest, SourceInfo, read_output, write_output
from engine.dataset.model import Dataset, Example
from engine.dataset.readers import detect_format, parse_lines
from engine.dataset.report import Findings, Location, ValidationReport, WarningGroup, plural
from engine.dataset.source import Source, open_regular, scan_source
from engine.dataset.split import Split, split_conversations
from engine.dataset.surrogates import check_value
from engine.dataset.tokens import CharEstimate, ChatTokenizer, load_counter

DEFAULT_MAX_SEQ_LENGTH = Hyperparameters.model_fields["max_seq_length"].default
# Kinds of warning by how much they matter: the expected ones of brightrun files last.
WARNING_ORDER = [
    "turn_too_long", "over_length", "truncated_response", "escaped_newlines", "empty_content",
    "duplicate_conversation", "duplicate_pair_id", "low_quality_score", "uniform_quality_score",
    "no_assistant_turn", "duplicated_user_turn", "null_target",
]  # fmt: skip

TokenizerArg = ChatTokenizer | str | Path | None


class ConvertOptions(BaseModel):
    """How a file becomes training examples; built from a job's DatasetSpec and its max_seq_length."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: DatasetFormat = DatasetFormat.AUTO
    mode: DatasetMode = DatasetMode.CONVERSATIONS
    eval_fraction: float = Field(0.1, ge=0.0, le=0.5)
    split_seed: int = Field(42, ge=0)
    unescape: bool = True
    drop_truncated: bool = True
    max_seq_length: int = Field(DEFAULT_MAX_SEQ_LENGTH, ge=64)

    @classmethod
    def from_spec(cls, dataset: DatasetSpec, max_seq_length: int) -> ConvertOptions:
        return cls(
            format=dataset.dataset_format,
            mode=dataset.dataset_mode,
            eval_fraction=dataset.eval_fraction,
            split_seed=dataset.split_seed,
            unescape=dataset.unescape,
            drop_truncated=dataset.drop_truncated,
            max_seq_length=max_seq_length,
        )


@dataclass(slots=True)
class Prepared:
    """A file read, checked and turned into examples (nothing written): what every dataset command starts from."""

    report: ValidationReport
    options: ConvertOptions
    counter: ChatTokenizer | CharEstimate
    repairs: Repairs
    source: Source | None = None
    dataset: Dataset | None = None
    examples: list[Example] = field(default_factory=list)
    split: Split | None = None

    def side(self, example: Example) -> str:
        return self.split.side(example.meta["conversation_index"]) if self.split else "train"

    @property
    def train(self) -> list[Example]:
        return [e for e in self.examples if self.side(e) == "train"]

    @property
    def held_out(self) -> list[Example]:
        return [e for e in self.examples if self.side(e) == "eval"]


def read_dataset(path: Path, format: DatasetFormat, findings: Findings) -> tuple[Source | None, Dataset | None]:
    """The file as records (those that pass their checks); every problem a finding.

    The file is read twice, a piece at a time: checked as text, then parsed record by record, so what is held
    is the records, not the file's text and every parsed object besides.
    """
    try:
        with open_regular(path) as handle:
            source = scan_source(handle, path, findings)
            if source is None:
                return None, None
            chosen = detect_format(handle) if format is DatasetFormat.AUTO else format
            dataset = Dataset(path, chosen, [])
            if chosen is DatasetFormat.BRIGHTRUN:
                handle.seek(0)
                read = read_document(handle, path.name, findings, check_text=source.may_hold_surrogates)
                if read is None:
                    return source, None
                dataset.conversations, dataset.metadata = read
                return source, dataset
            lines = parse_lines(handle, path.name, findings)
            if source.may_hold_surrogates:
                lines = _checked(lines, path.name, findings, pairs=chosen is DatasetFormat.BRIGHTRUN_JSONL)
            if chosen is DatasetFormat.BRIGHTRUN_JSONL:
                dataset.conversations, dataset.metadata = read_brightrun_lines(lines, path.name, findings)
            else:
                dataset.conversations = read_chat_lines(lines, path.name, findings)
            return source, dataset
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:  # it was checked as UTF-8 a moment before
        raise DatasetError(f"{path} changed while it was being read; validate it again") from None


def _checked(
    lines: Iterator[tuple[int, Any]], file: str, findings: Findings, *, pairs: bool
) -> Iterator[tuple[int, Any]]:
    for number, value in lines:
        check_value(value, Location(file=file, line=number), findings, pair=pairs)
        yield number, value


def prepare(path: str | Path, options: ConvertOptions, *, tokenizer: TokenizerArg = None) -> Prepared:
    """Read, check and build the examples of ``path``; the report says what was found, nothing is raised for
    bad content (DatasetError only when the file or the tokenizer cannot be read at all)."""
    path = Path(path)
    counter = load_counter(tokenizer)
    findings = Findings()
    repairs = Repairs(unescape=options.unescape, drop_truncated=options.drop_truncated)
    source, dataset = read_dataset(path, options.format, findings)
    report = ValidationReport(
        path=str(path),
        format=dataset.format.value if dataset else None,
        mode=options.mode.value,
        max_seq_length=options.max_seq_length,
        tokens_estimated=counter.estimated,
        tokenizer=counter.name,
    )
    prepared = Prepared(report, options, counter, repairs, source, dataset)
    if source is not None and dataset is None and options.format is not DatasetFormat.AUTO:
        report.format = options.format.value
    if dataset is not None:
        report.read = True
        report.conversations = len(dataset.conversations)
        report.pairs = dataset.pairs
        report.trainable_pairs = check_dataset(dataset, findings, refuse_empty=not findings.has_errors)
    if dataset is not None and not findings.has_errors:
        examples = build_examples(dataset, options.mode, counter, options.max_seq_length, repairs, findings)
        if not examples:
            findings.error("nothing_trainable", f"no reply fits in max_seq_length ({options.max_seq_length:,} tokens)")
        with_examples = {e.meta["conversation_index"] for e in examples}
        conversations = [c for c in dataset.conversations if c.index in with_examples]
        prepared.examples = examples
        prepared.split = split_conversations(conversations, options.eval_fraction, options.split_seed)
        report.examples = len(examples)
        report.tokens = sum(e.meta["tokens"] for e in examples)
        report.trained_tokens = sum(e.meta["trained_tokens"] for e in examples)
    report.errors, report.errors_omitted = findings.errors, findings.errors_omitted
    report.warnings = sorted(findings.warnings.values(), key=_warning_rank)
    return prepared


def _warning_rank(group: WarningGroup) -> int:
    return WARNING_ORDER.index(group.code) if group.code in WARNING_ORDER else -1


def validate_file(
    path: str | Path,
    *,
    format: DatasetFormat = DatasetFormat.AUTO,
    mode: DatasetMode = DatasetMode.CONVERSATIONS,
    max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
    tokenizer: TokenizerArg = None,
) -> ValidationReport:
    """Every error and warning in ``path``, and what conversion would make of it. Never raises on bad content."""
    options = ConvertOptions(format=format, mode=mode, max_seq_length=max_seq_length)
    return prepare(path, options, tokenizer=tokenizer).report


def refusal(report: ValidationReport) -> DatasetError:
    """The error that stops a job on a file with errors: the count and the first few, with their places."""
    errors = len(report.errors) + report.errors_omitted
    lines = [f"{report.path}: {plural(errors, 'error')}; nothing converted"]
    for error in report.errors[:5]:
        lines.append(f"  {error.message}" + (f" (at {error.location})" if error.location else ""))
    if errors > 5:
        lines.append(f"  … and {errors - 5:,} more (lorapod dataset validate {report.path})")
    return DatasetError("\n".join(lines), report)


def convert_file(
    path: str | Path, out_dir: str | Path, options: ConvertOptions, *, tokenizer: TokenizerArg = None
) -> Manifest:
    """Write train.jsonl, eval.jsonl and manifest.json for ``path`` into ``out_dir``; DatasetError (with the
    report) when the file has errors."""
    prepared = prepare(path, options, tokenizer=tokenizer)
    report = prepared.report
    if not report.ok or prepared.source is None or prepared.dataset is None or prepared.split is None:
        raise refusal(report)
    train, held_out = prepared.train, prepared.held_out
    manifest = Manifest(
        source=SourceInfo(
            path=str(Path(path).resolve()), sha256=prepared.source.sha256, size_bytes=prepared.source.size
        ),
        format=prepared.dataset.format,
        mode=options.mode,
        options=options.model_dump(mode="json"),
        counts=Counts(
            conversations=report.conversations,
            pairs=report.pairs,
            trainable_pairs=report.trainable_pairs,
            examples=len(prepared.examples),
            train_examples=len(train),
            eval_examples=len(held_out),
            tokens=report.tokens,
            trained_tokens=report.trained_tokens,
            train_tokens=sum(e.meta["tokens"] for e in train),
            tokens_estimated=report.tokens_estimated,
            tokenizer=report.tokenizer or "",
        ),
        split=prepared.split.to_dict(prepared.dataset.conversations),
        repairs=prepared.repairs.to_dict(),
        warnings=[{"code": w.code, "count": w.count, "message": w.message} for w in report.warnings],
    )
    write_output(Path(out_dir), train, held_out, manifest)
    return manifest


def load_examples(out_dir: str | Path) -> tuple[list[Example], list[Example], Manifest]:
    """The train and eval examples, and the manifest, of a folder written by convert_file."""
    return read_output(Path(out_dir))

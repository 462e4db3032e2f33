"""``lorapod dataset``: validate, convert, measure and preview a conversation dataset before training on it."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import click

from engine.config import DatasetFormat, DatasetMode, Hyperparameters
from engine.dataset import ChatTokenizer, ConvertOptions, DatasetError, Prepared, TokenizerError, convert_file, prepare
from engine.dataset.convert import describe_repairs
from engine.dataset.report import ValidationReport, plural
from tui.cli.output import console, emit_json, print_table
from tui.cli.presets import SET_HELP

MAX_SEQ_DEFAULT = Hyperparameters.model_fields["max_seq_length"].default
FORMATS = [f.value for f in DatasetFormat]
MODES = [m.value for m in DatasetMode]


def _file_argument(function: Any) -> Any:
    return click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))(function)


def _format_option(function: Any) -> Any:
    return click.option(
        "--format", "format_", type=click.Choice(FORMATS), default="auto", show_default=True, help="Input format."
    )(function)


def _tokenizer_option(function: Any) -> Any:
    return click.option(
        "--tokenizer",
        type=click.Path(exists=True, path_type=Path),
        default=None,
        help="tokenizer.json, or a model folder holding one. Without it, tokens are estimated (≈4 characters each).",
    )(function)


def _mode_option(function: Any) -> Any:
    return click.option(
        "--mode",
        type=click.Choice(MODES),
        default=None,
        help="conversations: one example per conversation (default); pairs: one per reply.",
    )(function)


def _max_seq_option(function: Any) -> Any:
    return click.option(
        "--max-seq-length",
        type=click.IntRange(64, 131072),
        default=MAX_SEQ_DEFAULT,
        show_default=True,
        help="Tokens per sequence; longer conversations are split at turn boundaries.",
    )(function)


def load_tokenizer(path: Path | None) -> ChatTokenizer | None:
    """The tokenizer at ``path``; a usage error (exit 2) when it cannot be loaded."""
    if path is None:
        return None
    try:
        return ChatTokenizer.load(path)
    except TokenizerError as exc:
        raise click.BadParameter(str(exc), param_hint="--tokenizer") from None


def say(text: str, style: str = "") -> None:
    """A line of output, wrapped at the terminal's width with its continuation indented (whole when piped)."""
    from rich.text import Text

    out = console()
    lines = textwrap.wrap(text, out.width, subsequent_indent="    ") if out.is_terminal else [text]
    for line in lines or [""]:
        out.print(Text(line, style=style), soft_wrap=True)


def print_report(report: ValidationReport) -> None:
    """The report, coloured on a terminal: a word (error, warning, ok, refused) always says the status too."""
    from rich.text import Text

    out = console()
    styles = {"error": "red", "refused": "bold red", "warning": "yellow", "ok:": "green"}
    for line in report.format_text(out.width if out.is_terminal else None).splitlines():
        style = next((s for word, s in styles.items() if line.startswith(word)), "")
        out.print(Text(line, style=style), soft_wrap=True)


def prepared_or_exit(path: Path, options: ConvertOptions, tokenizer: ChatTokenizer | None, as_json: bool) -> Prepared:
    """The prepared dataset; when the file has errors, the report (text or JSON) and exit 1."""
    result = prepare(path, options, tokenizer=tokenizer)
    if not result.report.ok:
        if as_json:
            emit_json(result.report.to_dict())
        else:
            print_report(result.report)
        sys.exit(1)
    return result


@click.group()
def dataset() -> None:
    """Validate, convert, measure and preview training datasets."""


@dataset.command()
@_file_argument
@_format_option
@_mode_option
@_max_seq_option
@_tokenizer_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def validate(
    file: Path, format_: str, mode: str | None, max_seq_length: int, tokenizer: Path | None, as_json: bool
) -> None:
    """Every error (with its line and column, or conversation, pair and field) and every warning in FILE.

    Exit 0 when FILE can be trained (warnings allowed), 1 when it has errors.
    """
    options = ConvertOptions(
        format=DatasetFormat(format_), mode=DatasetMode(mode or "conversations"), max_seq_length=max_seq_length
    )
    report = prepare(file, options, tokenizer=load_tokenizer(tokenizer)).report
    if as_json:
        emit_json(report.to_dict())
    else:
        print_report(report)
    if not report.ok:
        sys.exit(1)


@dataset.command()
@_file_argument
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@_mode_option
@click.option("--eval-fraction", type=click.FloatRange(0.0, 0.5), default=0.1, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True, help="Seed of the held-out split.")
@click.option(
    "--unescape/--no-unescape",
    default=True,
    show_default=True,
    help='Repair literal backslash-n (and \\") into line breaks (and quotes).',
)
@click.option(
    "--drop-truncated/--keep-truncated",
    default=True,
    show_default=True,
    help="Leave replies that stop mid-sentence out of training (they stay as context).",
)
@_max_seq_option
@_tokenizer_option
@_format_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def convert(
    file: Path,
    out_dir: Path,
    mode: str | None,
    eval_fraction: float,
    seed: int,
    unescape: bool,
    drop_truncated: bool,
    max_seq_length: int,
    tokenizer: Path | None,
    format_: str,
    as_json: bool,
) -> None:
    """Write train.jsonl, eval.jsonl and manifest.json for FILE into the --output folder.

    A file with errors is refused (exit 1) with the validation report.
    """
    options = ConvertOptions(
        format=DatasetFormat(format_),
        mode=DatasetMode(mode or "conversations"),
        eval_fraction=eval_fraction,
        split_seed=seed,
        unescape=unescape,
        drop_truncated=drop_truncated,
        max_seq_length=max_seq_length,
    )
    try:
        manifest = convert_file(file, out_dir, options, tokenizer=load_tokenizer(tokenizer))
    except DatasetError as exc:
        if exc.report is None:
            raise
        if as_json:
            emit_json(exc.report.to_dict())
        else:
            print_report(exc.report)
        sys.exit(1)
    if as_json:
        emit_json(manifest.model_dump(mode="json"))
        return
    counts, split = manifest.counts, manifest.split
    say(
        f"{file}: {manifest.format.value}, {plural(counts.conversations, 'conversation')}, "
        f"{plural(counts.pairs, 'pair')} ({counts.trainable_pairs:,} trainable)"
    )
    for warning in manifest.warnings:
        say(f"warning [{warning['code']}] ×{warning['count']:,}: {warning['message']}", "yellow")
    for line in describe_repairs(manifest.repairs):
        say(line)
    how = "estimated at ≈4 characters per token" if counts.tokens_estimated else f"tokenizer {counts.tokenizer}"
    say(
        f"{plural(counts.examples, 'example')} in {manifest.mode.value} mode: {counts.tokens:,} tokens, "
        f"{counts.trained_tokens:,} trained ({how})"
    )
    held = plural(split["eval_conversations"], "conversation")
    say(f"wrote {out_dir}:")
    say(f"  train.jsonl    {plural(counts.train_examples, 'example')}, {counts.train_tokens:,} tokens: one epoch")
    say(
        f"  eval.jsonl     {plural(counts.eval_examples, 'example')}, {counts.tokens - counts.train_tokens:,} "
        f"tokens: {held} held out, seed {split['seed']}"
    )
    say("  manifest.json  source sha256, options, counts, split, repairs, warnings")


def _options(file_format: str, mode: str | None, preset_mode: DatasetMode, max_seq_length: int) -> ConvertOptions:
    return ConvertOptions(
        format=DatasetFormat(file_format),
        mode=DatasetMode(mode) if mode else preset_mode,
        max_seq_length=max_seq_length,
    )


@dataset.command()
@_file_argument
@_tokenizer_option
@click.option("--preset", "preset_name", default=None, help="Preset giving batch shape and max_seq_length.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@_mode_option
@_format_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(
    file: Path,
    tokenizer: Path | None,
    preset_name: str | None,
    overrides: tuple[str, ...],
    mode: str | None,
    format_: str,
    as_json: bool,
) -> None:
    """Tokens per example, padding waste with packing, and optimizer steps per epoch under a preset."""
    from engine.dataset.stats import dataset_stats
    from store.settings import load_settings
    from tui.cli.presets import resolve_preset

    spec = resolve_preset(preset_name or load_settings().default_preset, overrides).to_spec()
    chat_tokenizer = load_tokenizer(tokenizer)
    hyper = spec.hyperparameters
    preset_mode = spec.dataset.dataset_mode
    prepared = prepared_or_exit(
        file, _options(format_, mode, preset_mode, hyper.max_seq_length), chat_tokenizer, as_json
    )
    figures = dataset_stats(prepared, hyper, spec.resources.gpu_count)
    other_mode = DatasetMode.PAIRS if prepared.options.mode is DatasetMode.CONVERSATIONS else DatasetMode.CONVERSATIONS
    other = prepare(file, prepared.options.model_copy(update={"mode": other_mode}), tokenizer=chat_tokenizer).report
    if as_json:
        emit_json(
            {
                "path": str(file),
                "preset": spec.preset,
                **figures.to_dict(),
                "other_mode": {"mode": other_mode.value, "examples": other.examples, "tokens": other.tokens},
            }
        )
        return
    say(f"{file.name}: {figures.mode} mode, preset {spec.preset}")
    if figures.tokens_estimated:
        say("tokens estimated at ≈4 characters each (give --tokenizer for exact counts)")
    else:
        say(f"tokens counted with {figures.tokenizer}")
    rows = [("tokens", figures.tokens), ("trained tokens", figures.trained_tokens)]
    print_table(
        ["per example", "min", "median", "p95", "max", "total"],
        [(name, f"{s.min:,}", f"{s.median:,.0f}", f"{s.p95:,}", f"{s.max:,}", f"{s.total:,}") for name, s in rows],
        justify={c: "right" for c in ("min", "median", "p95", "max", "total")},
    )
    fraction = prepared.options.eval_fraction
    say(
        f"examples: {figures.train_examples:,} train, {figures.eval_examples:,} held out "
        f"(whole conversations, {fraction:.0%})"
    )
    ratio = other.tokens / figures.tokens.total if figures.tokens.total else 0.0
    say(f"{other_mode.value} mode instead: {plural(other.examples, 'example')}, {other.tokens:,} tokens ({ratio:.2f}×)")
    if figures.padding_waste is not None:
        say(
            f"packed at {figures.max_seq_length:,} tokens: {plural(figures.packed_sequences, 'sequence')}, "
            f"{figures.padding_waste:.1%} of their room empty"
        )
        say("  (TRL packs best-fit decreasing and padding-free: empty room costs steps only)")
    unit = "sequences" if figures.packing else "examples"
    say(
        f"steps per epoch: {figures.steps_per_epoch:,} = {figures.packed_sequences:,} {unit} ÷ ({figures.batch_size} "
        f"× {figures.gradient_accumulation_steps} accumulation × {plural(figures.gpu_count, 'GPU')})"
    )
    say(f"{figures.epochs} epochs: {figures.steps_per_epoch * figures.epochs:,} optimizer steps")


@dataset.command()
@_file_argument
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Example number, from 0.")
@_tokenizer_option
@_mode_option
@_max_seq_option
@_format_option
def preview(
    file: Path, index: int, tokenizer: Path | None, mode: str | None, max_seq_length: int, format_: str
) -> None:
    """One example exactly as the model sees it, the tokens it learns marked (<|eot_id|> included)."""
    from rich.text import Text

    from engine.dataset.preview import preview_example

    chat_tokenizer = load_tokenizer(tokenizer)
    prepared = prepared_or_exit(
        file, _options(format_, mode, DatasetMode.CONVERSATIONS, max_seq_length), chat_tokenizer, False
    )
    examples = prepared.examples
    if index >= len(examples):
        raise click.BadParameter(
            f"{index}: FILE has {plural(len(examples), 'example')} (0–{len(examples) - 1})", param_hint="--index"
        )
    example = examples[index]
    shown = preview_example(example, chat_tokenizer)
    meta = example.meta
    strata = ", ".join(v for v in (meta["persona"], meta["emotional_arc"], meta["topic"]) if v)
    window = meta["window"]
    say(
        f"example {index} (of {len(examples)}, numbered from 0), {prepared.options.mode.value} mode, "
        f"{prepared.side(example)} split"
    )
    say(f"conversation {meta['conversation_id']}" + (f" ({strata})" if strata else ""))
    window_text = f", window {window['index']} of {window['of']}" if window["of"] > 1 else ""
    count = "≈" if shown.estimated else ""
    say(
        f"trained replies: {', '.join(meta['pair_ids'])}{window_text}; {count}{shown.tokens:,} tokens, "
        f"{count}{shown.trained:,} trained ({shown.trained / max(1, shown.tokens):.0%})"
    )
    out = console()
    highlight = out.is_terminal and not out.no_color
    text = Text()
    for segment in shown.segments:
        if not segment.trained:
            text.append(segment.text, style="dim" if highlight else "")
        elif highlight:
            text.append(segment.text, style="bold green")
        else:
            text.append(f"[[{segment.text}]]")
    rule = "─" * min(out.width, 80)
    out.print(rule, style="dim")
    out.print(text, soft_wrap=True)
    out.print(rule, style="dim")
    legend = "bold green: trained" if highlight else "[[…]]: trained"
    unit = "tokens" if not shown.estimated else "characters (no --tokenizer: spans, not tokens)"
    say(f"{legend} {unit}, the loss is computed there; the rest is context the model reads.")


@dataset.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_registered(as_json: bool) -> None:
    """The registered training files (one per path and content), each with whether its bytes changed since.

    A file whose contents changed, or that is gone, is flagged: the jobs that trained on it trained on the
    bytes registered, not on what is there now.
    """
    from store.files import FileState, checked_files
    from tui.cli.common import open_context

    files = checked_files(open_context().ledger)
    if as_json:
        emit_json(
            [
                {"id": str(f.id), "name": f.name, "path": f.storage_path, "sha256": f.sha256, "format": f.format,
                 "size_bytes": f.size_bytes, "contents": state.value, "registered": f.created_at.isoformat()}
                for f, state in files
            ]
        )  # fmt: skip
        return
    if not files:
        click.echo("no training files yet: a file is registered when a job starts on it")
        return
    marks = {FileState.UNCHANGED: "✔", FileState.CHANGED: "⚠", FileState.MISSING: "✖", FileState.ELSEWHERE: "·"}
    print_table(
        ["name", "contents", "sha256", "path", "registered"],
        [
            (f.name, f"{marks[state]} {state.value}", f.sha256[:12], f.storage_path, f.created_at.strftime("%Y-%m-%d"))
            for f, state in files
        ],
        flexible=("path", "name"),
    )
    changed = sum(state is not FileState.UNCHANGED and state is not FileState.ELSEWHERE for _, state in files)
    if changed:
        click.secho(f"{plural(changed, 'file')} changed or missing since registered", err=True, fg="yellow")

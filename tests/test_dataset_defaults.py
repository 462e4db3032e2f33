"""The data defaults, token by token on the owner's files: escapes repaired, truncated replies left out, and later
windows of a split conversation keeping as much earlier context as pairs mode gives the same reply."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from engine.config import DatasetMode, DatasetSpec
from engine.dataset import ConvertOptions, Example, convert_file, prepare
from engine.dataset.checks import ESCAPES, is_truncated
from tests.conftest import run_cli
from tests.dataset_helpers import MALFORMED, REAL_18, REAL_24, demo_tokenizer, real_file, supervised_sequences

_FIXES = {"r\\n": "\n", "n": "\n", "t": "\t", '"': '"'}


def owners_file_with_escapes(folder: Path) -> Path:
    """The owner's 48-conversation file with its one stray backslash removed: the file that teaches escapes."""
    text = real_file(MALFORMED).read_text(encoding="utf-8")
    fixed = text.replace('"shame_to_acceptance": 24\\\\\n', '"shame_to_acceptance": 24\n', 1)
    assert fixed != text
    path = folder / "brightrun-v4-48.json"
    path.write_text(fixed, encoding="utf-8")
    return path


def trained_texts(examples: list[Example]) -> Counter[str]:
    """Each trained run of tokens (a reply and its <|eot_id|>) decoded back to text."""
    tokenizer = demo_tokenizer()
    runs = supervised_sequences(examples, tokenizer)
    return Counter({tokenizer.tokenizer.decode(list(run), skip_special_tokens=True): n for run, n in runs.items()})


def test_repairs_are_on_by_default_in_the_spec_and_the_options() -> None:
    spec = DatasetSpec(dataset_path="d.json")
    assert spec.unescape and spec.drop_truncated
    options = ConvertOptions.from_spec(spec, 2048)
    assert options.unescape and options.drop_truncated
    assert ConvertOptions().unescape and ConvertOptions().drop_truncated


@pytest.mark.parametrize("mode", list(DatasetMode))
def test_by_default_no_trained_token_teaches_an_escape_or_a_cut_reply(tmp_path: Path, mode: DatasetMode) -> None:
    path = owners_file_with_escapes(tmp_path)
    tokenizer = demo_tokenizer()
    plain = prepare(path, ConvertOptions(mode=mode, unescape=False, drop_truncated=False), tokenizer=tokenizer)
    default = prepare(path, ConvertOptions(mode=mode), tokenizer=tokenizer)
    assert plain.report.ok and default.report.ok
    before = trained_texts(plain.examples)
    assert sum(n for text, n in before.items() if ESCAPES.search(text)) > 30  # what the file teaches unrepaired
    assert sum(n for text, n in before.items() if is_truncated(text)) > 10
    expected: Counter[str] = Counter()
    for text, n in before.items():
        if not is_truncated(text):
            expected[ESCAPES.sub(lambda m: _FIXES[m.group(1)], text)] += n
    assert trained_texts(default.examples) == expected


def test_the_counts_are_in_the_manifest_and_the_output(tmp_path: Path) -> None:
    path = owners_file_with_escapes(tmp_path)
    manifest = convert_file(path, tmp_path / "out", ConvertOptions(max_seq_length=2048), tokenizer=demo_tokenizer())
    assert manifest.repairs["drop_truncated"] == {"pairs": 19}
    unescaped = manifest.repairs["unescape"]
    assert unescaped["texts"] == 73 and 30 < unescaped["replies"] < unescaped["texts"]

    result = run_cli("dataset", "convert", str(path), "-o", str(tmp_path / "cli"))
    assert result.exit_code == 0, result.output
    assert f"{unescaped['replies']} trained replies" in result.output and "19 pairs" in result.output


def test_each_repair_has_a_flag_to_turn_it_off(tmp_path: Path) -> None:
    path = owners_file_with_escapes(tmp_path)
    result = run_cli(
        "dataset", "convert", str(path), "-o", str(tmp_path / "out"), "--no-unescape", "--keep-truncated", "--json"
    )
    assert result.exit_code == 0, result.output
    assert '"repairs": {}' in result.output.replace("\n", "").replace("  ", "")
    spec = DatasetSpec(dataset_path="d.json", unescape=False, drop_truncated=False)
    options = ConvertOptions.from_spec(spec, 2048)
    assert not options.unescape and not options.drop_truncated


@pytest.mark.parametrize("name", [REAL_18, REAL_24, MALFORMED])
def test_a_later_window_opens_with_the_context_pairs_mode_gives_its_reply(tmp_path: Path, name: str) -> None:
    path = owners_file_with_escapes(tmp_path) if name == MALFORMED else real_file(name)
    tokenizer = demo_tokenizer()
    options = ConvertOptions(max_seq_length=2048)
    conversations = prepare(path, options, tokenizer=tokenizer)
    pairs = prepare(path, options.model_copy(update={"mode": DatasetMode.PAIRS}), tokenizer=tokenizer)
    by_pair = {(e.meta["conversation_index"], e.meta["pair_ids"][0]): e for e in pairs.examples}
    openers = [
        (e.meta["conversation_index"], e.meta["pair_ids"][0], e)
        for e in conversations.examples
        if e.meta["window"]["index"] > 1
    ]
    assert len(openers) > 5
    for index, pair_id, window in openers:
        first = window.trained_turns()[0]
        opening = tokenizer.encode(window.messages[: first + 1])
        alone = tokenizer.encode(by_pair[(index, pair_id)].messages)
        assert opening.input_ids == alone.input_ids, f"conversation {index}, {pair_id}"
        assert opening.assistant_mask == alone.assistant_mask

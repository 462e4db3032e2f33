"""Conversion: both modes train the same tokens, over-long conversations split cleanly, the split is recorded."""

from __future__ import annotations

import hashlib
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from engine.config import DatasetMode, DatasetSpec
from engine.dataset import ConvertOptions, DatasetError, Example, convert_file, load_examples, prepare, validate_file
from engine.dataset.manifest import lorapod_version
from tests.conftest import run_cli
from tests.dataset_helpers import (
    CHAT_SAMPLE,
    MALFORMED,
    REAL_18,
    REAL_24,
    SAMPLE,
    demo_tokenizer,
    real_file,
    sample_document,
    supervised_sequences,
    write_json,
)


def examples_of(path: Path, mode: DatasetMode, **options: Any) -> list[Example]:
    prepared = prepare(path, ConvertOptions(mode=mode, **options), tokenizer=options.pop("tokenizer", None))
    assert prepared.report.ok, prepared.report.format_text()
    return prepared.examples


def assert_same_supervision(path: Path, **options: Any) -> tuple[int, int]:
    """Both modes train exactly the same token runs; returns (conversations tokens, pairs tokens)."""
    tokenizer = demo_tokenizer()
    conversations = prepare(path, ConvertOptions(mode=DatasetMode.CONVERSATIONS, **options), tokenizer=tokenizer)
    pairs = prepare(path, ConvertOptions(mode=DatasetMode.PAIRS, **options), tokenizer=tokenizer)
    assert conversations.report.ok and pairs.report.ok
    assert supervised_sequences(conversations.examples, tokenizer) == supervised_sequences(pairs.examples, tokenizer)
    assert conversations.report.trained_tokens == pairs.report.trained_tokens
    return conversations.report.tokens, pairs.report.tokens


def test_both_modes_supervise_the_same_tokens_on_the_sample() -> None:
    conversations, pairs = assert_same_supervision(SAMPLE)
    assert pairs > 2 * conversations  # conversations mode needs less than half the tokens


@pytest.mark.parametrize("name", [REAL_18, REAL_24])
def test_both_modes_supervise_the_same_tokens_on_the_owners_files(name: str) -> None:
    conversations, pairs = assert_same_supervision(real_file(name))
    # Under 1.8× with this tokenizer: trained on the sample only, it splits the owner's text into more tokens,
    # so a few conversations pass 4,096 tokens and their windows repeat some context.
    assert pairs > 1.7 * conversations


def test_both_modes_supervise_the_same_tokens_when_windows_are_needed() -> None:
    conversations, pairs = assert_same_supervision(SAMPLE, max_seq_length=700)
    assert conversations < pairs


@pytest.mark.parametrize("mode", list(DatasetMode))
def test_the_duplicated_user_turn_is_gone(mode: DatasetMode) -> None:
    for example in examples_of(SAMPLE, mode):
        roles = [m["role"] for m in example.messages]
        assert roles[0] == "system" and roles.count("system") == 1
        assert all(a != b for a, b in pairwise(roles[1:])), roles
        assert roles[-1] == "assistant"


def test_conversations_mode_trains_every_reply_once_pairs_mode_one_each() -> None:
    conversations = examples_of(SAMPLE, DatasetMode.CONVERSATIONS)
    pairs = examples_of(SAMPLE, DatasetMode.PAIRS)
    assert len(conversations) == 7 and len(pairs) == 27
    assert sum(len(e.trained_turns()) for e in conversations) == 27
    assert all(len(e.trained_turns()) == 1 for e in pairs)
    assert sorted(i for e in conversations for i in e.meta["pair_ids"]) == sorted(
        i for e in pairs for i in e.meta["pair_ids"]
    )
    context = [m for e in pairs for m in e.messages[:-1] if m["role"] == "assistant"]
    assert context and all(m.get("weight") == 0 for m in context)


def test_convert_writes_what_the_trainer_reads(tmp_path: Path) -> None:
    options = ConvertOptions(eval_fraction=0.3, split_seed=7)
    manifest = convert_file(SAMPLE, tmp_path / "out", options)
    train, held_out, read_back = load_examples(tmp_path / "out")
    assert read_back == manifest
    assert manifest.source.sha256 == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert manifest.lorapod_version == lorapod_version() and manifest.format.value == "brightrun-lora-v4"
    counts = manifest.counts
    assert (counts.conversations, counts.pairs, counts.trainable_pairs, counts.examples) == (7, 54, 27, 7)
    assert (counts.train_examples, counts.eval_examples) == (len(train), len(held_out)) == (5, 2)
    assert counts.train_tokens == sum(e.meta["tokens"] for e in train)
    assert manifest.split["eval_conversation_ids"] == [e.meta["conversation_id"] for e in held_out]
    assert manifest.options["split_seed"] == 7 and manifest.mode is DatasetMode.CONVERSATIONS
    assert {w["code"] for w in manifest.warnings} == {"null_target", "duplicated_user_turn"}
    line = json.loads((tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(line) == {"messages", "meta"}
    assert {"conversation_id", "conversation_index", "persona", "emotional_arc", "topic", "pair_ids", "window"} <= set(
        line["meta"]
    )


def test_options_come_from_the_job_spec() -> None:
    spec = DatasetSpec(dataset_path="d.json", dataset_mode=DatasetMode.PAIRS, eval_fraction=0.2, unescape=True)
    options = ConvertOptions.from_spec(spec, 2048)
    assert (options.mode, options.eval_fraction, options.unescape, options.max_seq_length) == (
        DatasetMode.PAIRS,
        0.2,
        True,
        2048,
    )


def test_a_file_with_errors_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"conversations": [', encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        convert_file(broken, tmp_path / "out", ConvertOptions())
    assert caught.value.report is not None and not caught.value.report.ok
    assert "line 1" in str(caught.value)
    assert not (tmp_path / "out" / "manifest.json").exists()
    result = run_cli("dataset", "convert", str(broken), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1 and "refused" in result.stdout


def test_load_examples_refuses_a_folder_that_is_not_a_conversion(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no manifest\.json"):
        load_examples(tmp_path)
    convert_file(SAMPLE, tmp_path, ConvertOptions())
    (tmp_path / "train.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match="the manifest says"):
        load_examples(tmp_path)


def test_repairs_are_on_by_default_reported_and_can_be_turned_off(tmp_path: Path) -> None:
    document = sample_document()
    pairs = document["conversations"][0]["training_pairs"]
    pairs[1]["target_response"] = 'Three steps:\\n\\n1. Save \\"first\\".\\n2. Invest.'
    for later in pairs[2:]:
        later["conversation_history"][1]["content"] = pairs[1]["target_response"]
    pairs[5]["target_response"] = "The next thing to look at is the \\"
    for later in pairs[6:]:
        later["conversation_history"][5]["content"] = pairs[5]["target_response"]
    path = write_json(tmp_path / "d.json", document)

    plain = examples_of(path, DatasetMode.CONVERSATIONS, unescape=False, drop_truncated=False)
    assert "\\n" in plain[0].messages[2]["content"] and len(plain[0].trained_turns()) == 4
    off = convert_file(path, tmp_path / "off", ConvertOptions(unescape=False, drop_truncated=False))
    assert off.repairs == {}

    manifest = convert_file(path, tmp_path / "out", ConvertOptions())
    assert manifest.repairs == {"unescape": {"texts": 1, "replies": 1}, "drop_truncated": {"pairs": 1}}
    train, held_out, _ = load_examples(tmp_path / "out")
    first = next(e for e in train + held_out if e.meta["conversation_index"] == 0)
    assert first.messages[2]["content"] == 'Three steps:\n\n1. Save "first".\n2. Invest.'
    assert len(first.trained_turns()) == 3  # the truncated reply stays as context, untrained
    assert first.messages[6]["content"].endswith("\\") and first.messages[6].get("weight") == 0
    assert "educational_turn6" not in first.meta["pair_ids"]


def test_over_long_conversations_split_at_turn_boundaries() -> None:
    whole = examples_of(SAMPLE, DatasetMode.CONVERSATIONS)
    prepared = prepare(SAMPLE, ConvertOptions(max_seq_length=500))
    windows = prepared.examples
    assert prepared.report.ok and len(windows) > len(whole)
    assert any(w.code == "over_length" for w in prepared.report.warnings)
    system = whole[0].messages[0]
    trained: list[str] = []
    for example in windows:
        assert example.meta["tokens"] <= 500
        assert example.messages[0] == system  # every window keeps the system prompt
        assert example.messages[1]["role"] == "user" and example.messages[-1]["role"] == "assistant"
        trained += example.meta["pair_ids"]
        assert len(example.trained_turns()) == len(example.meta["pair_ids"])
    everything = [i for e in whole for i in e.meta["pair_ids"]]
    assert sorted(trained) == sorted(everything)  # every reply trained, each exactly once
    later = [e for e in windows if e.meta["window"]["index"] > 1]
    assert later and any(m.get("weight") == 0 for e in later for m in e.messages)  # earlier turns as context


def test_a_reply_that_cannot_fit_is_reported_not_cut(tmp_path: Path) -> None:
    document = sample_document()
    pairs = document["conversations"][1]["training_pairs"]
    pairs[3]["target_response"] = "A very long answer. " * 400
    for later in pairs[4:]:
        later["conversation_history"][3]["content"] = pairs[3]["target_response"]
    path = write_json(tmp_path / "d.json", document)
    prepared = prepare(path, ConvertOptions(max_seq_length=1024))
    assert prepared.report.ok
    too_long = next(w for w in prepared.report.warnings if w.code == "turn_too_long")
    assert too_long.count == 1
    location = too_long.locations[0]
    assert (location.conversation_index, location.pair_index, location.field) == (1, 3, "target_response")
    trained = [(e.meta["conversation_index"], i) for e in prepared.examples for i in e.meta["pair_ids"]]
    assert (1, "therapeutic_turn4") not in trained and len(trained) == 26
    assert all("A very long answer" not in m["content"] for e in prepared.examples for m in e.messages)


def test_the_split_is_seeded_by_conversation_and_balanced(tmp_path: Path) -> None:
    def held_out(path: Path, seed: int, fraction: float = 0.3) -> list[str]:
        prepared = prepare(path, ConvertOptions(eval_fraction=fraction, split_seed=seed))
        assert prepared.split is not None
        return prepared.split.eval_ids

    first = held_out(SAMPLE, 1)
    assert len(first) == 2 and held_out(SAMPLE, 1) == first
    assert any(held_out(SAMPLE, seed) != first for seed in range(2, 6))
    personas = {
        c["conversation_metadata"]["conversation_id"]: c["conversation_metadata"]["scaffolding"]["persona_key"]
        for c in sample_document()["conversations"]
    }
    for seed in range(10):
        assert len({personas[i] for i in held_out(SAMPLE, seed)}) == 2  # never both from one persona
    reordered = sample_document()
    reordered["conversations"].reverse()
    assert sorted(held_out(write_json(tmp_path / "r.json", reordered), 1)) == sorted(first)


def test_the_split_never_divides_a_conversation() -> None:
    prepared = prepare(SAMPLE, ConvertOptions(max_seq_length=500, eval_fraction=0.3))
    train = {e.meta["conversation_id"] for e in prepared.train}
    held_out = {e.meta["conversation_id"] for e in prepared.held_out}
    assert held_out and not train & held_out


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (0.01, 1), (0.5, 2)])
def test_eval_size_rules(tmp_path: Path, fraction: float, expected: int) -> None:
    document = sample_document()
    document["conversations"] = document["conversations"][:4]
    prepared = prepare(write_json(tmp_path / "d.json", document), ConvertOptions(eval_fraction=fraction))
    assert prepared.split is not None and len(prepared.split.eval_ids) == expected


def test_chat_jsonl_converts_with_context_only_turns() -> None:
    examples = examples_of(CHAT_SAMPLE, DatasetMode.CONVERSATIONS)
    assert len(examples) == 3
    third = examples[2]
    assert [m.get("weight", 1) for m in third.messages if m["role"] == "assistant"] == [0, 1]


def test_the_cli_converts_and_says_what_it_wrote(tmp_path: Path) -> None:
    result = run_cli("dataset", "convert", str(SAMPLE), "-o", str(tmp_path / "out"), "--seed", "3")
    assert result.exit_code == 0
    assert "train.jsonl" in result.stdout and "eval.jsonl" in result.stdout
    as_json = run_cli("dataset", "convert", str(SAMPLE), "-o", str(tmp_path / "again"), "--seed", "3", "--json")
    manifest = json.loads(as_json.stdout)
    assert manifest["counts"]["examples"] == 7 and manifest["split"]["seed"] == 3
    _, _, written = load_examples(tmp_path / "out")
    assert written.split["eval_conversation_ids"] == manifest["split"]["eval_conversation_ids"]


def test_the_owners_malformed_file_cannot_be_converted(tmp_path: Path) -> None:
    result = run_cli("dataset", "convert", str(real_file(MALFORMED)), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1 and "line 27, column 34" in result.stdout


def test_validate_and_convert_agree_on_counts() -> None:
    report = validate_file(SAMPLE, mode=DatasetMode.PAIRS)
    assert report.examples == 27 and report.mode == "pairs"


def test_pairs_listed_out_of_order_still_make_one_example_per_conversation(tmp_path: Path) -> None:
    document = sample_document()
    for conversation in document["conversations"]:
        conversation["training_pairs"].reverse()
    path = write_json(tmp_path / "reversed.json", document)
    shuffled = examples_of(path, DatasetMode.CONVERSATIONS)
    assert [e.messages for e in shuffled] == [e.messages for e in examples_of(SAMPLE, DatasetMode.CONVERSATIONS)]


def test_a_write_that_fails_leaves_no_partial_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "eval.jsonl").mkdir(parents=True)  # a folder where the eval file goes: its write fails
    result = run_cli("dataset", "convert", str(SAMPLE), "-o", str(out))
    assert result.exit_code == 1
    assert f"cannot write the converted dataset to {out}" in result.output
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".partial")) == []
    assert not (out / "manifest.json").exists()

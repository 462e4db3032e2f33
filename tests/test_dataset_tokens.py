"""Tokens: the trained mask matches Hugging Face's, <|eot_id|> is learned, and stats, preview and estimate use it."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, processors

from engine.chat import EOT
from engine.config import DatasetMode
from engine.dataset import ChatTokenizer, ConvertOptions, Example, TokenizerError, prepare
from engine.dataset.stats import pack_best_fit_decreasing
from tests.conftest import run_cli
from tests.dataset_helpers import CHAT_SAMPLE, REAL_18, SAMPLE, demo_tokenizer, demo_tokenizer_dir, real_file


def sample_examples(mode: DatasetMode = DatasetMode.CONVERSATIONS) -> list[Example]:
    return prepare(SAMPLE, ConvertOptions(mode=mode)).examples


@pytest.mark.parametrize("trim_offsets", [False, True])
def test_the_mask_is_what_transformers_computes_from_the_chat_template(tmp_path: Path, trim_offsets: bool) -> None:
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "tokenizer"
    shutil.copytree(demo_tokenizer_dir(), folder)
    if trim_offsets:  # offsets of whitespace tokens trimmed to nothing, as some tokenizers are configured
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        backend.post_processor = processors.ByteLevel(trim_offsets=True)
        backend.save(str(folder / "tokenizer.json"))
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(folder)
    ours = ChatTokenizer(hf.backend_tokenizer)
    examples = sample_examples()[:3] + prepare(CHAT_SAMPLE, ConvertOptions()).examples[:2]
    examples[0].messages[2]["content"] = "🙂👋 " + examples[0].messages[2]["content"] + " ça va? こんにちは 👋"
    for example in examples:
        expected = hf.apply_chat_template(
            example.messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        encoded = ours.encode(example.messages)
        assert encoded.input_ids == list(expected["input_ids"])
        assert encoded.assistant_mask == list(expected["assistant_masks"])


def test_eot_is_trained_after_every_reply_and_headers_are_not() -> None:
    tokenizer = demo_tokenizer()
    for example in sample_examples():
        encoded = tokenizer.encode(example.messages)
        ids, mask = encoded.input_ids, encoded.assistant_mask
        eots = [i for i, token in enumerate(ids) if token == tokenizer.eot_id]
        assert len(eots) == len(example.messages)
        trained_eots = [i for i in eots if mask[i]]
        assert len(trained_eots) == len(example.trained_turns())
        for i in trained_eots:
            assert mask[i - 1] == 1  # the reply's last token
            assert i + 1 == len(ids) or mask[i + 1] == 0  # the next header is context
        assert mask[0] == 0 and sum(mask) == encoded.trained


def test_context_only_replies_are_not_trained() -> None:
    example = sample_examples(DatasetMode.PAIRS)[3]
    encoded = demo_tokenizer().encode(example.messages)
    context = [m for m in example.messages if m["role"] == "assistant" and m.get("weight") == 0]
    assert len(context) == 3
    ends = [*encoded.offsets[1:], len(encoded.text)]
    trained_text = "".join(
        encoded.text[start:end]
        for start, end, flag in zip(encoded.offsets, ends, encoded.assistant_mask, strict=True)
        if flag
    )
    assert trained_text == example.messages[-1]["content"] + EOT


def test_counts_per_message_add_up_to_the_encoding() -> None:
    tokenizer = demo_tokenizer()
    for example in sample_examples() + sample_examples(DatasetMode.PAIRS)[:5]:
        encoded = tokenizer.encode(example.messages)
        assert len(encoded.input_ids) == 1 + sum(tokenizer.message_tokens(example.messages))
        assert tokenizer.trained_tokens(example.messages) == encoded.trained


def test_converted_examples_carry_exact_counts_with_a_tokenizer() -> None:
    prepared = prepare(SAMPLE, ConvertOptions(), tokenizer=demo_tokenizer_dir())
    assert not prepared.report.tokens_estimated
    for example in prepared.examples:
        encoded = demo_tokenizer().encode(example.messages)
        assert example.meta["tokens"] == len(encoded.input_ids)
        assert example.meta["trained_tokens"] == encoded.trained


def test_tokenizers_load_from_a_folder_or_a_file_and_bad_ones_are_named(tmp_path: Path) -> None:
    folder = demo_tokenizer_dir()
    assert ChatTokenizer.load(folder).eot_id == ChatTokenizer.load(folder / "tokenizer.json").eot_id
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json"):
        ChatTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="cannot load"):
        ChatTokenizer.load(tmp_path)
    plain = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(TokenizerError, match="not a Llama 3 tokenizer"):
        ChatTokenizer(plain)
    result = run_cli("dataset", "validate", str(SAMPLE), "--tokenizer", str(tmp_path))
    assert result.exit_code == 2 and "--tokenizer" in result.stderr


def test_a_caller_truncation_setting_never_cuts_an_example() -> None:
    tokenizer = Tokenizer.from_file(str(demo_tokenizer_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(16)
    example = sample_examples()[0]
    whole = demo_tokenizer().encode(example.messages).input_ids
    assert ChatTokenizer(tokenizer).encode(example.messages).input_ids == whole


def test_preview_marks_the_trained_tokens_and_eot(tmp_path: Path) -> None:
    examples = sample_examples()
    for extra in ([], ["--tokenizer", str(demo_tokenizer_dir())]):
        result = run_cli("dataset", "preview", str(SAMPLE), "--index", "2", *extra)
        assert result.exit_code == 0, result.output
        shown = result.stdout.split("─" * 80)[1]  # between the rules: the example itself
        marked = re.findall(r"\[\[(.*?)\]\]", shown, re.S)
        replies = [m["content"] for m in examples[2].messages if m["role"] == "assistant"]
        assert marked == [reply + EOT for reply in replies]
        assert "<|begin_of_text|><|start_header_id|>system<|end_header_id|>" in result.stdout
    assert "tokens" in result.stdout and "trained" in result.stdout
    assert run_cli("dataset", "preview", str(SAMPLE), "--index", "99").exit_code == 2


def test_best_fit_decreasing_packs_like_trl() -> None:
    assert sorted(pack_best_fit_decreasing([6, 5, 4, 3, 2, 1], 10)) == [1, 10, 10]
    assert pack_best_fit_decreasing([12, 3], 10) == [10, 3]  # longer than the room: truncated, as TRL does
    assert len(pack_best_fit_decreasing([4] * 3000, 10)) == 1500  # per batch of 1,000, as datasets.map does


def test_stats_count_tokens_packing_and_steps() -> None:
    result = run_cli("dataset", "stats", str(SAMPLE), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["tokens_estimated"] is True and data["mode"] == "conversations" and data["preset"] == "balanced"
    assert data["examples"] == 7 and data["train_examples"] + data["eval_examples"] == 7
    per_step = data["batch_size"] * data["gradient_accumulation_steps"] * data["gpu_count"]
    assert data["steps_per_epoch"] == math.ceil(data["packed_sequences"] / per_step)
    assert 0 <= data["padding_waste"] < 1
    assert data["tokens"]["min"] <= data["tokens"]["median"] <= data["tokens"]["p95"] <= data["tokens"]["max"]
    assert data["other_mode"]["mode"] == "pairs" and data["other_mode"]["tokens"] > 2 * data["tokens"]["total"]
    exact = json.loads(
        run_cli("dataset", "stats", str(SAMPLE), "--tokenizer", str(demo_tokenizer_dir()), "--json").stdout
    )
    assert exact["tokens_estimated"] is False
    text = run_cli("dataset", "stats", str(SAMPLE)).stdout
    assert "estimated at ≈4 characters" in text and "steps per epoch" in text


def test_estimate_counts_the_tokens_of_a_dataset() -> None:
    assert run_cli("estimate").exit_code == 2
    assert run_cli("estimate", "--tokens", "100", "--dataset", str(SAMPLE)).exit_code == 2
    assert run_cli("estimate", "--tokens", "100", "--tokenizer", str(demo_tokenizer_dir())).exit_code == 2
    data = json.loads(run_cli("estimate", "--dataset", str(SAMPLE), "--preset", "smoke", "--json").stdout)
    prepared = prepare(SAMPLE, ConvertOptions(max_seq_length=512))
    assert data["tokens_per_epoch"] == sum(e.meta["tokens"] for e in prepared.train)
    assert data["tokens_from"]["tokens_estimated"] is True and data["tokens_from"]["mode"] == "conversations"
    assert data["tokens"] == data["tokens_per_epoch"] * data["epochs"]
    text = run_cli("estimate", "--dataset", str(SAMPLE), "--tokenizer", str(demo_tokenizer_dir())).stdout
    assert "tokens per epoch (" in text and "estimated" not in text.split("tokens per epoch")[1].splitlines()[0]


def test_estimate_refuses_a_broken_dataset(tmp_path: Path) -> None:
    broken = tmp_path / "b.json"
    broken.write_text("{", encoding="utf-8")
    result = run_cli("estimate", "--dataset", str(broken))
    assert result.exit_code == 1 and "refused" in result.stdout


def test_stats_on_the_owners_file_with_the_demo_tokenizer() -> None:
    path = real_file(REAL_18)
    data = json.loads(run_cli("dataset", "stats", str(path), "--tokenizer", str(demo_tokenizer_dir()), "--json").stdout)
    assert data["examples"] >= 18 and data["tokens"]["max"] <= 4096

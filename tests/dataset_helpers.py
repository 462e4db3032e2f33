"""Shared by the dataset tests: the samples, the owner's real files (when present) and a demo tokenizer."""

from __future__ import annotations

import atexit
import copy
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from engine.dataset import ChatTokenizer, Example
from engine.demo import build_demo_tokenizer
from tests.conftest import ROOT

SAMPLE = ROOT / "samples" / "brightrun-sample.json"
CHAT_SAMPLE = ROOT / "samples" / "chat-sample.jsonl"
REAL_DATA = ROOT.parent / "shared" / "data" / "brightrun"
REAL_18 = "brightrun-v4-18-conversations.json"
REAL_24 = "brightrun-v4-24-conversations.json"
MALFORMED = "brightrun-v4-48-conversations-MALFORMED.json"


def real_file(name: str) -> Path:
    """One of the dataset owner's files; the test is skipped where they are not beside the checkout."""
    path = REAL_DATA / name
    if not path.exists():
        pytest.skip(f"the dataset owner's files are not here ({REAL_DATA} is missing)")
    return path


def sample_document() -> dict[str, Any]:
    return copy.deepcopy(_sample_document())


@cache
def _sample_document() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE.read_text(encoding="utf-8"))
    return data


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def texts_of(document: dict[str, Any]) -> list[str]:
    """Every distinct text of a brightrun document: what the demo tokenizer is trained on."""
    texts: dict[str, None] = {}
    for conversation in document["conversations"]:
        for pair in conversation["training_pairs"]:
            for text in (pair["system_prompt"], pair["current_user_input"], pair["target_response"]):
                if text:
                    texts.setdefault(text, None)
    return list(texts)


@cache
def demo_tokenizer_dir() -> Path:
    """A Llama 3 style tokenizer trained on the sample's text, built once per test session."""
    folder = Path(tempfile.mkdtemp(prefix="lorapod-demo-tokenizer-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    build_demo_tokenizer(texts_of(_sample_document()), folder)
    return folder


@cache
def demo_tokenizer() -> ChatTokenizer:
    return ChatTokenizer.load(demo_tokenizer_dir())


def supervised_sequences(examples: Iterable[Example], tokenizer: ChatTokenizer) -> Counter[tuple[int, ...]]:
    """Each run of trained tokens (one reply and its <|eot_id|>), as a multiset over all examples."""
    runs: Counter[tuple[int, ...]] = Counter()
    for example in examples:
        encoded = tokenizer.encode(example.messages)
        run: list[int] = []
        for token, trained in zip(encoded.input_ids, encoded.assistant_mask, strict=True):
            if trained:
                run.append(token)
            elif run:
                runs[tuple(run)] += 1
                run = []
        if run:
            runs[tuple(run)] += 1
    return runs


def to_jsonl_export(document: dict[str, Any], *, with_ids: bool = True) -> str:
    """The brightrun JSONL export of a document: a _meta line, then one pair per line."""
    lines = [json.dumps({"_meta": document.get("training_file_metadata", {})})]
    for conversation in document["conversations"]:
        conversation_id = conversation["conversation_metadata"]["conversation_id"]
        for pair in conversation["training_pairs"]:
            exported = copy.deepcopy(pair)
            if with_ids:
                exported["conversation_metadata"]["conversation_id"] = conversation_id
            lines.append(json.dumps(exported, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def big_document(megabytes: float) -> dict[str, Any]:
    """The sample's conversations repeated to about ``megabytes`` of indented JSON, each copy with its own id and
    texts (its history still repeating its earlier turns).

    Replies carry an em dash, as the owner's files do: Python then holds the text at two bytes a character.
    """
    document = sample_document()
    originals = document["conversations"]
    for conversation in originals:
        for pair in conversation["training_pairs"]:
            if pair["target_response"]:
                pair["target_response"] += " — one step at a time."
    size = sum(len(json.dumps(c, indent=2, ensure_ascii=False).encode()) for c in originals) / len(originals)
    conversations = []
    for index in range(int(megabytes * 1e6 / size)):
        conversation = copy.deepcopy(originals[index % len(originals)])
        conversation["conversation_metadata"]["conversation_id"] = f"big-{index:06d}"
        for pair in conversation["training_pairs"]:
            for turn in pair["conversation_history"]:
                turn["content"] += f" (#{index})"
            pair["current_user_input"] += f" (#{index})"
            if pair["target_response"]:
                pair["target_response"] += f" (#{index})"
        conversations.append(conversation)
    document["conversations"] = conversations
    return document

"""Dataset benchmarks: validate and convert 10,000 pairs, peak memory on a 200 MB file, tokens saved by
conversations mode, packing at 4,096."""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

from engine.config import DatasetMode
from engine.dataset import ChatTokenizer, ConvertOptions, convert_file, prepare, validate_file
from engine.dataset.stats import pack_best_fit_decreasing
from engine.demo import build_demo_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "brightrun-sample.json"
REAL = ROOT.parent / "shared" / "data" / "brightrun"
REAL_FILES = ["brightrun-v4-18-conversations.json", "brightrun-v4-24-conversations.json"]
PAIRS = 10_000
REPEAT = 3
SEQ = 4096
LARGE_MB = 200


def _sources() -> list[Path]:
    real = [REAL / name for name in REAL_FILES if (REAL / name).exists()]
    return real or [SAMPLE]


def _texts(path: Path) -> list[str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    texts: dict[str, None] = {}
    for conversation in document["conversations"]:
        for pair in conversation["training_pairs"]:
            for text in (pair["system_prompt"], pair["current_user_input"], pair["target_response"]):
                if text:
                    texts.setdefault(text, None)
    return list(texts)


def _big_file(source: Path, out: Path) -> tuple[int, int]:
    """``source``'s conversations repeated, each with a fresh conversation id, until there are 10,000 pairs."""
    document = json.loads(source.read_text(encoding="utf-8"))
    originals = document["conversations"]
    conversations, pairs = [], 0
    while pairs < PAIRS:
        conversation = copy.deepcopy(originals[len(conversations) % len(originals)])
        conversation["conversation_metadata"]["conversation_id"] = str(uuid.UUID(int=len(conversations)))
        conversations.append(conversation)
        pairs += len(conversation["training_pairs"])
    document["conversations"] = conversations
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    return pairs, len(conversations)


def _median_seconds(action: Any) -> float:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def validate_and_convert(workdir: Path, tokenizer: ChatTokenizer) -> list[dict[str, Any]]:
    source = _sources()[-1]
    big = workdir / "big.json"
    pairs, conversations = _big_file(source, big)
    size_mb = big.stat().st_size / 1e6
    where = f"{pairs:,} pairs in {conversations:,} conversations ({size_mb:.0f} MB), {source.name} repeated"
    validate = _median_seconds(lambda: validate_file(big))
    convert = _median_seconds(lambda: convert_file(big, workdir / "out", ConvertOptions()))
    exact = _median_seconds(lambda: convert_file(big, workdir / "out", ConvertOptions(), tokenizer=tokenizer))
    timing = f"median of {REPEAT}"
    return [
        {
            "name": "validate 10,000 pairs",
            "value": round(validate, 2),
            "unit": f"s ({timing})",
            "target": "",
            "conditions": f"{where}; tokens estimated from characters",
        },
        {
            "name": "convert 10,000 pairs",
            "value": round(convert, 2),
            "unit": f"s ({timing})",
            "target": "",
            "conditions": "as above; convert validates too, then writes train/eval JSONL and the manifest",
        },
        {
            "name": "validate + convert 10,000 pairs",
            "value": round(validate + convert, 2),
            "unit": "s",
            "target": "< 3",
            "conditions": "the two commands one after the other, as a user runs them",
        },
        {
            "name": "convert 10,000 pairs, tokenizer counts",
            "value": round(exact, 2),
            "unit": f"s ({timing})",
            "target": "",
            "conditions": "as above with the demo tokenizer counting every message (cached per distinct text)",
        },
    ]


def _large_files(source: Path, workdir: Path) -> tuple[Path, Path, int]:
    """A LARGE_MB document of ``source``'s conversations repeated, each copy's texts made its own (a copy's
    history still repeats its earlier turns, as the owner's files do), and its JSONL export."""
    document = json.loads(source.read_text(encoding="utf-8"))
    originals = document.pop("conversations")
    size = sum(len(json.dumps(c, indent=2, ensure_ascii=False).encode()) for c in originals) / len(originals)
    count = int(LARGE_MB * 1e6 / size)
    big, export = workdir / "large.json", workdir / "large.jsonl"
    with big.open("w", encoding="utf-8") as out, export.open("w", encoding="utf-8") as lines:
        out.write(json.dumps(document, indent=2, ensure_ascii=False)[:-2] + ',\n  "conversations": [\n')
        lines.write(json.dumps({"_meta": document.get("training_file_metadata", {})}) + "\n")
        for index in range(count):
            conversation = copy.deepcopy(originals[index % len(originals)])
            conversation_id = str(uuid.UUID(int=index))
            conversation["conversation_metadata"]["conversation_id"] = conversation_id
            for pair in conversation["training_pairs"]:
                for turn in pair["conversation_history"]:
                    turn["content"] += f" (#{index})"
                pair["current_user_input"] += f" (#{index})"
                if pair["target_response"] is not None:
                    pair["target_response"] += f" (#{index})"
                pair["conversation_metadata"]["conversation_id"] = conversation_id
                lines.write(json.dumps(pair, ensure_ascii=False) + "\n")
            text = json.dumps(conversation, indent=2, ensure_ascii=False).replace("\n", "\n    ")
            out.write(("" if index == 0 else ",\n") + "    " + text)
        out.write("\n  ]\n}\n")
    return big, export, count


# Run in a fresh process, so the peak is the command's own; VmHWM, as ru_maxrss starts at the parent's peak.
_PEAK = """
import re, sys
from pathlib import Path
from engine.dataset import ConvertOptions, convert_file, validate_file
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
action, path, warm, out = sys.argv[1:]
validate_file(warm)
before = peak()
validate_file(path) if action == "validate" else convert_file(path, out, ConvertOptions())
print(before, peak())
"""


def peak_memory(workdir: Path) -> list[dict[str, Any]]:
    if not Path("/proc/self/status").exists():
        return []
    source = _sources()[-1]
    big, export, conversations = _large_files(source, workdir)
    results = []
    for path, shape in ((big, "document"), (export, "JSONL export")):
        size = path.stat().st_size
        for action in ("validate", "convert"):
            command = [sys.executable, "-c", _PEAK, action, str(path), str(SAMPLE), str(workdir / "large-out")]
            before, peak = map(int, subprocess.run(command, check=True, capture_output=True, text=True).stdout.split())
            results.append(
                {
                    "name": f"{action} peak memory, {size / 1e6:.0f} MB {shape}",
                    "value": f"{peak / 1e6:.0f} MB",
                    "unit": f"peak RSS, {peak / size:.2f}× the file ({(peak - before) / size:.2f}× above start-up)",
                    "target": "<= 2× the file",
                    "conditions": (
                        f"{conversations:,} conversations: {source.name}'s repeated, each copy's texts its own; "
                        f"a new process, {before / 1e6:.0f} MB once the dataset code is loaded"
                    ),
                }
            )
        path.unlink()
    return results


def modes(tokenizer: ChatTokenizer, tokenizer_note: str) -> list[dict[str, Any]]:
    results = []
    for source in _sources():
        prepared = {
            mode: prepare(source, ConvertOptions(mode=mode, eval_fraction=0.0), tokenizer=tokenizer)
            for mode in DatasetMode
        }
        conversations, pairs = prepared[DatasetMode.CONVERSATIONS], prepared[DatasetMode.PAIRS]
        same = conversations.report.trained_tokens == pairs.report.trained_tokens
        windowed = sum(1 for e in conversations.examples if e.meta["window"]["of"] > 1)
        saved = 1 - conversations.report.tokens / pairs.report.tokens
        results.append(
            {
                "name": f"tokens saved by conversations mode: {source.name}",
                "value": f"{saved:.1%}",
                "unit": (
                    f"{conversations.report.tokens:,} vs {pairs.report.tokens:,} tokens "
                    f"({pairs.report.tokens / conversations.report.tokens:.2f}×)"
                ),
                "target": "",
                "conditions": (
                    f"{len(conversations.examples)} vs {len(pairs.examples)} examples ({windowed} of them windows of "
                    f"conversations past {SEQ:,} tokens), trained tokens {'identical' if same else 'DIFFERENT'} "
                    f"({conversations.report.trained_tokens:,}); {tokenizer_note}"
                ),
            }
        )
        for mode, result in prepared.items():
            lengths = [e.meta["tokens"] for e in result.examples]
            packed = pack_best_fit_decreasing(lengths, SEQ)
            waste = 1 - sum(packed) / (len(packed) * SEQ)
            pad, computed = padding_through_trl(lengths)
            results.append(
                {
                    "name": f"packing at {SEQ}: {source.name}, {mode.value}",
                    "value": f"{waste:.1%}",
                    "unit": f"room left empty, {len(packed)} sequences",
                    "target": "",
                    "conditions": (
                        f"{len(lengths)} examples, best-fit decreasing as TRL packs (padding-free: empty room "
                        f"costs steps, not compute); {tokenizer_note}"
                    ),
                }
            )
            results.append(
                {
                    "name": f"padding waste at {SEQ}: {source.name}, {mode.value}",
                    "value": f"{pad / computed:.1%}",
                    "unit": f"of {computed:,} token positions computed are padding",
                    "target": "<= 3%",
                    "conditions": (
                        f"TRL {version('trl')}'s own pack_dataset (bfd) and padding-free collator on these "
                        f"examples, batches of {BATCH} packed sequences as the balanced preset trains them"
                    ),
                }
            )
    return results


BATCH = 4  # the balanced preset's batch_size


def padding_through_trl(lengths: list[int]) -> tuple[int, int]:
    """(pad positions, all positions) in the batches TRL's SFT collator builds from these packed examples."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    pad_id = -1  # no real token has it, so every pad position is counted
    rows = [{"input_ids": list(range(1, n + 1))} for n in lengths]
    packed = pack_dataset(Dataset.from_list(rows), SEQ, strategy="bfd")
    collate = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True, return_position_ids=True)
    pad = computed = 0
    for start in range(0, len(packed), BATCH):
        batch = collate([packed[i] for i in range(start, min(start + BATCH, len(packed)))])
        ids = batch["input_ids"]
        pad += int((ids == pad_id).sum())
        computed += ids.numel()
    return pad, computed


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sources = _sources()
        build_demo_tokenizer([text for source in sources for text in _texts(source)], workdir / "tokenizer")
        tokenizer = ChatTokenizer.load(workdir / "tokenizer")
        trained_on = " and ".join(source.name for source in sources)
        note = f"demo tokenizer: byte-level BPE, 4,096 tokens, trained on the text of {trained_on}"
        return [*validate_and_convert(workdir, tokenizer), *peak_memory(workdir), *modes(tokenizer, note)]

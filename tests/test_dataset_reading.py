"""Reading a dataset file: only regular files are opened, and a file that is not valid Unicode is refused in place."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import JobSpec
from engine.dataset import ConvertOptions, DatasetError, convert_file, stream, validate_file
from engine.prepare import prepare
from engine.workdir import Workdir
from tests.dataset_helpers import CHAT_SAMPLE, SAMPLE, big_document, sample_document, to_jsonl_export, write_json

# What a runaway read may take before the test process stops it: far more than validating the sample needs.
_MEMORY_CAP = 2 << 30


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP))


def lorapod(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``lorapod ARGS`` as a real process, capped in memory and time: a read that never ends fails the test."""
    command = [sys.executable, "-c", "from tui.cli import main; main()", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, preexec_fn=_cap_memory)


def _fifo(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "data.json"
    os.mkfifo(path)
    return path, "a FIFO"


def _link_to_dev_zero(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "data.json"
    path.symlink_to("/dev/zero")
    return path, "a character device"


@pytest.mark.parametrize("make", [_fifo, _link_to_dev_zero], ids=["fifo", "symlink to /dev/zero"])
@pytest.mark.parametrize("command", ["validate", "convert", "stats", "preview"])
def test_anything_but_a_regular_file_is_refused_by_name(tmp_path: Path, make: object, command: str) -> None:
    path, kind = make(tmp_path)  # type: ignore[operator]
    extra = ["-o", str(tmp_path / "out")] if command == "convert" else []
    result = lorapod("dataset", command, str(path), *extra)
    assert result.returncode == 1, result.stderr
    assert f"{path} is {kind}" in result.stderr and "not a regular file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    link = tmp_path / "linked.json"
    link.symlink_to(SAMPLE)
    result = lorapod("dataset", "validate", str(link))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 27 trainable pairs" in result.stdout


def test_the_engine_refuses_a_dataset_that_is_not_a_regular_file(tmp_path: Path) -> None:
    path, kind = _fifo(tmp_path)
    spec = JobSpec.model_validate({"base_model": "demo", "dataset": {"dataset_path": str(path)}})
    with pytest.raises(DatasetError, match=f"{path} is {kind}, not a regular file"):
        prepare(spec, Workdir(tmp_path / "job"), tokenizer=None)  # type: ignore[arg-type]


def _with_lone_surrogate(tmp_path: Path) -> Path:
    """The sample with a reply and a history turn cut inside an emoji: JSON escapes of half a surrogate pair."""
    document = sample_document()
    pairs = document["conversations"][1]["training_pairs"]
    pairs[1]["target_response"] = "Breathe in \ud83d\ude00 and out \ud800 slowly."
    pairs[3]["conversation_history"][1]["content"] = "cut here \udc00"
    path = tmp_path / "surrogate.json"
    path.write_text(json.dumps(document, indent=2), encoding="ascii")  # ensure_ascii: the escapes as they arrive
    return path


def test_an_unpaired_surrogate_is_an_error_at_its_conversation_pair_and_field(tmp_path: Path) -> None:
    report = validate_file(_with_lone_surrogate(tmp_path))
    assert not report.ok
    found = {
        (e.code, e.location.conversation_index, e.location.pair_index, e.location.field): e.message
        for e in report.errors
        if e.location is not None
    }
    assert set(found) == {
        ("unpaired_surrogate", 1, 1, "target_response"),
        ("unpaired_surrogate", 1, 3, "conversation_history[1].content"),
    }
    assert "\\ud800" in found["unpaired_surrogate", 1, 1, "target_response"]
    assert "not valid Unicode text" in found["unpaired_surrogate", 1, 1, "target_response"]
    assert len(report.errors) == 2  # the whole emoji (a surrogate pair) is fine


@pytest.mark.parametrize("shape", ["brightrun-jsonl", "chat-jsonl"])
def test_an_unpaired_surrogate_in_jsonl_is_located_by_line_and_field(tmp_path: Path, shape: str) -> None:
    if shape == "chat-jsonl":
        lines = CHAT_SAMPLE.read_text(encoding="utf-8").splitlines()
        chat = json.loads(lines[1])
        chat["messages"][2]["content"] += "\ud800"
        lines[1], field = json.dumps(chat), "messages[2].content"
    else:
        lines = to_jsonl_export(sample_document()).splitlines()
        pair = json.loads(lines[3])
        pair["current_user_input"] += "\udbff"
        lines[3], field = json.dumps(pair), "current_user_input"
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = validate_file(path)
    assert [e.code for e in report.errors] == ["unpaired_surrogate"]
    location = report.errors[0].location
    assert location is not None and (location.line, location.field) == (2 if shape == "chat-jsonl" else 4, field)


def test_validate_and_convert_refuse_an_unpaired_surrogate_and_write_nothing(tmp_path: Path) -> None:
    path = _with_lone_surrogate(tmp_path)
    validated = lorapod("dataset", "validate", str(path))
    assert validated.returncode == 1
    assert "unpaired surrogate (\\ud800)" in validated.stdout and "training_pairs[1]" in validated.stdout
    out = tmp_path / "out"
    converted = lorapod("dataset", "convert", str(path), "-o", str(out))
    assert converted.returncode == 1
    assert "Traceback" not in converted.stdout + converted.stderr
    assert "unpaired surrogate (\\ud800)" in converted.stdout
    assert not out.exists() or list(out.iterdir()) == []
    with pytest.raises(DatasetError, match="unpaired surrogate"):
        convert_file(path, tmp_path / "engine-out", ConvertOptions())


# The peak resident memory of this process (VmHWM: ru_maxrss would start at the parent's peak on Linux).
_PEAK_GROWTH = """
import re, sys
from pathlib import Path
from engine.dataset import validate_file
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
validate_file(sys.argv[2])  # loads every module validation uses, so only the file's own cost is measured
before = peak()
report = validate_file(sys.argv[1])
print(peak() - before, report.ok, report.pairs)
"""


@pytest.mark.parametrize("shape", ["document", "jsonl"])
def test_validating_a_large_file_takes_at_most_twice_its_size_in_memory(tmp_path: Path, shape: str) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("peak memory is read from /proc")
    document = big_document(40)
    path = tmp_path / f"big.{shape}"
    if shape == "jsonl":
        path.write_text(to_jsonl_export(document), encoding="utf-8")
    else:
        write_json(path, document)
    size = path.stat().st_size
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_GROWTH, str(path), str(SAMPLE)], capture_output=True, text=True, check=True
    )
    growth, ok, pairs = result.stdout.split()
    assert ok == "True" and int(pairs) == sum(len(c["training_pairs"]) for c in document["conversations"])
    assert int(growth) <= 2 * size, f"peak memory grew by {int(growth) / size:.1f}× the file's {size / 1e6:.0f} MB"


_DOCUMENT = json.dumps({**sample_document(), "conversations": sample_document()["conversations"][:3]}, indent=1)


def _read_in_pieces(path: Path, chunk: int) -> dict[str, object]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stream, "CHUNK", chunk)
        return validate_file(path).to_dict()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunk=st.sampled_from([1, 5, 64, 1000]),
    cut=st.integers(min_value=0, max_value=len(_DOCUMENT)),
    at=st.integers(min_value=0, max_value=len(_DOCUMENT) - 1),
    byte=st.sampled_from(list('{}[],:"\\ 0a\n')),
    minified=st.booleans(),
)
def test_a_document_read_in_small_pieces_reads_as_if_whole(
    tmp_path: Path, chunk: int, cut: int, at: int, byte: str, minified: bool
) -> None:
    """Held a piece at a time, the file gives the same report: records, errors, lines, columns and excerpts."""
    text = json.dumps(json.loads(_DOCUMENT), separators=(",", ":")) if minified else _DOCUMENT
    text = (text[:at] + byte + text[at + 1 :])[: max(cut, 1)] if cut < len(text) else text
    path = tmp_path / "pieces.json"
    path.write_text(text, encoding="utf-8")
    assert _read_in_pieces(path, chunk) == validate_file(path).to_dict()

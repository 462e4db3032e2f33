"""Validation: the owner's files counted right, and every broken or odd input a located verdict, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import DatasetFormat
from engine.dataset import validate_file
from engine.dataset.report import MAX_ERRORS
from tests.conftest import run_cli, run_lorapod
from tests.dataset_helpers import (
    CHAT_SAMPLE,
    MALFORMED,
    REAL_18,
    REAL_24,
    SAMPLE,
    real_file,
    sample_document,
    to_jsonl_export,
    write_json,
)


def codes(report: Any) -> set[str]:
    return {w.code for w in report.warnings}


@pytest.mark.parametrize(("name", "trainable", "null"), [(REAL_18, 62, 66), (REAL_24, 74, 79)])
def test_the_owners_files_count_their_trainable_pairs(name: str, trainable: int, null: int) -> None:
    report = validate_file(real_file(name))
    assert report.ok and report.format == "brightrun-lora-v4"
    assert report.trainable_pairs == trainable
    warnings = {w.code: w.count for w in report.warnings}
    assert warnings["null_target"] == null
    assert warnings["duplicated_user_turn"] == trainable
    assert warnings["uniform_quality_score"] == trainable + null  # quality_score is 3 everywhere


def test_the_malformed_file_is_refused_naming_line_27_column_34() -> None:
    path = real_file(MALFORMED)
    result = run_lorapod("dataset", "validate", str(path))
    assert result.returncode == 1
    assert "line 27, column 34" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    as_json = json.loads(run_lorapod("dataset", "validate", str(path), "--json").stdout)
    assert as_json["ok"] is False
    assert as_json["errors"][0]["code"] == "not_json"
    assert as_json["errors"][0]["location"] == {"file": MALFORMED, "line": 27, "column": 34}
    assert as_json["errors"][0]["excerpt"].splitlines()[1].endswith("^")


def _repaired_malformed(tmp_path: Path) -> Path:
    """The malformed file with its stray backslash removed: it then shows the family's content problems."""
    lines = real_file(MALFORMED).read_text(encoding="utf-8").split("\n")
    lines[26] = lines[26].rstrip("\\")
    path = tmp_path / "repaired.json"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_escaped_newlines_and_truncated_replies_are_counted_and_located(tmp_path: Path) -> None:
    report = validate_file(_repaired_malformed(tmp_path))
    assert report.ok and report.conversations == 48 and report.trainable_pairs == 138
    warnings = {w.code: w for w in report.warnings}
    assert warnings["truncated_response"].count == 19
    assert warnings["escaped_newlines"].count >= 66
    first = warnings["truncated_response"].locations[0]
    assert (first.conversation_index, first.pair_id, first.field) == (6, "therapeutic_turn4", "target_response")


def test_the_sample_is_valid_with_the_real_files_structure() -> None:
    report = validate_file(SAMPLE)
    assert report.ok
    assert (report.conversations, report.pairs, report.trainable_pairs, report.examples) == (7, 54, 27, 7)
    assert codes(report) == {"null_target", "duplicated_user_turn"}
    assert report.tokens_estimated and report.tokens > report.trained_tokens > 0


def test_json_output_has_the_documented_shape() -> None:
    result = run_cli("dataset", "validate", str(SAMPLE), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {"ok", "format", "conversations", "pairs", "trainable_pairs", "examples", "tokens"} <= data.keys()
    assert data["errors"] == []
    for warning in data["warnings"]:
        assert set(warning) == {"code", "message", "count", "locations"}
        assert 0 < len(warning["locations"]) <= 5


def _broken_pair_document() -> dict[str, Any]:
    document = sample_document()
    pair = document["conversations"][2]["training_pairs"][3]
    del pair["current_user_input"]
    pair["target_response"] = 5
    pair["conversation_history"][1]["role"] = "bot"
    pair["conversation_history"][2] = "not a turn"
    return document


# name → (file content, expected error code, expected location fields)
BROKEN: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "empty": (b"", "empty_file", {}),
    "only whitespace": (b"  \n\n ", "empty_file", {}),
    "binary": (bytes(range(256)) * 4, "not_text", {}),
    "latin-1": ('{"conversations": []}\n"café"'.encode("latin-1"), "not_text", {"line": 2, "column": 5}),
    "csv": (b"id,user,assistant\n1,hello,hi there\n", "not_json", {"line": 1, "column": 1}),
    "trailing comma": (b'{"conversations": [\n  {"training_pairs": []},\n]}\n', "not_json", {"line": 3}),
    "top-level list": (b"[1, 2, 3]", "wrong_shape", {}),
    "json null": (b"null", "wrong_shape", {}),
    "no conversations": (b'{"training_file_metadata": {}}', "wrong_shape", {"field": "conversations"}),
    "conversations not a list": (b'{"conversations": {"a": 1}}', "wrong_shape", {"field": "conversations"}),
    "conversation not an object": (b'{"conversations": [7]}', "wrong_type", {"conversation_index": 0}),
    "no training_pairs": (b'{"conversations": [{}]}', "missing_field", {"field": "training_pairs"}),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "not_json", {}),
    "nothing trainable": (None, "nothing_trainable", {}),
    "chat unknown role": (
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]}\n',
        "unknown_role",
        {"line": 1, "field": "messages[1]"},
    ),
    "chat bad line": (
        b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{"messages": [\n',
        "not_json",
        {"line": 2},
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_inputs_get_a_located_verdict(tmp_path: Path, name: str) -> None:
    content, code, where = BROKEN[name]
    path = tmp_path / "data.json"
    if content is None:
        document = sample_document()
        for conversation in document["conversations"]:
            for pair in conversation["training_pairs"]:
                pair["target_response"] = None
        write_json(path, document)
    else:
        path.write_bytes(content)
    report = validate_file(path)
    assert not report.ok
    assert report.errors[0].code == code, report.format_text()
    location = report.errors[0].location.to_dict() if report.errors[0].location else {}
    assert where.items() <= location.items()
    json.dumps(report.to_dict())  # always serialisable


def test_a_truncated_file_says_where_it_ends(tmp_path: Path) -> None:
    text = SAMPLE.read_text(encoding="utf-8")
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) // 3], encoding="utf-8")
    report = validate_file(path)
    error = report.errors[0]
    assert error.code == "not_json" and "truncated" in error.message
    assert error.location is not None and error.location.line == text[: len(text) // 3].count("\n") + 1


def test_one_deeply_broken_pair_reports_every_problem_in_one_pass(tmp_path: Path) -> None:
    report = validate_file(write_json(tmp_path / "d.json", _broken_pair_document()))
    found = {(e.code, e.location.field if e.location else None) for e in report.errors}
    assert found == {
        ("missing_field", "current_user_input"),
        ("wrong_type", "target_response"),
        ("unknown_role", "conversation_history[1]"),
        ("wrong_type", "conversation_history[2]"),
    }
    for error in report.errors:
        assert error.location is not None
        assert (error.location.conversation_index, error.location.pair_index) == (2, 3)
        assert error.location.pair_id == "conflict_resolution_turn4"
    assert report.conversations == 7  # the rest of the file was still read


def test_errors_past_the_limit_are_counted(tmp_path: Path) -> None:
    document = sample_document()
    for conversation in document["conversations"]:
        for pair in conversation["training_pairs"]:
            del pair["system_prompt"], pair["id"]
    report = validate_file(write_json(tmp_path / "d.json", document))
    assert len(report.errors) == MAX_ERRORS
    assert report.errors_omitted == 2 * 54 - MAX_ERRORS
    assert f"and {report.errors_omitted} more errors" in report.format_text()


@pytest.mark.parametrize("name", ["csv", "binary", "deep nesting"])
def test_the_cli_refuses_broken_files_without_a_traceback(tmp_path: Path, name: str) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(BROKEN[name][0])
    result = run_lorapod("dataset", "validate", str(path))
    assert result.returncode == 1
    assert "refused" in result.stdout and "Traceback" not in result.stderr


def test_missing_file_is_a_usage_error() -> None:
    assert run_cli("dataset", "validate", "no-such-file.json").exit_code == 2


def test_bom_crlf_and_non_latin_text_read_the_same(tmp_path: Path) -> None:
    document = sample_document()
    reply = document["conversations"][0]["training_pairs"][1]
    reply["target_response"] += " こんにちは 👋 Привет — ça va?"
    text = json.dumps(document, indent=2, ensure_ascii=False).replace("\n", "\r\n")
    path = tmp_path / "windows.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    report = validate_file(path)
    assert report.ok and report.trainable_pairs == 27
    assert codes(report) == {"null_target", "duplicated_user_turn"}


def test_a_parse_error_after_a_bom_and_crlf_keeps_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_bytes(b'\xef\xbb\xbf{\r\n  "conversations": [\r\n    oops\r\n  ]\r\n}\r\n')
    error = validate_file(path).errors[0]
    assert error.location is not None and (error.location.line, error.location.column) == (3, 5)


@pytest.mark.parametrize("with_ids", [True, False])
def test_the_jsonl_export_reads_as_the_same_conversations(tmp_path: Path, with_ids: bool) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text(to_jsonl_export(sample_document(), with_ids=with_ids), encoding="utf-8")
    report = validate_file(path)
    assert report.ok and report.format == "brightrun-lora-v4-jsonl"
    assert (report.conversations, report.pairs, report.trainable_pairs, report.examples) == (7, 54, 27, 7)


def test_jsonl_export_problems_are_located_by_line(tmp_path: Path) -> None:
    lines = to_jsonl_export(sample_document()).splitlines()
    pair = json.loads(lines[4])
    pair["target_response"] = ["not", "text"]
    lines[4] = json.dumps(pair)
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    error = validate_file(path).errors[0]
    assert error.code == "wrong_type"
    assert error.location is not None and (error.location.line, error.location.field) == (5, "target_response")


def test_chat_jsonl_is_detected_and_counted() -> None:
    report = validate_file(CHAT_SAMPLE)
    assert report.ok and report.format == "chat-jsonl"
    assert (report.conversations, report.pairs, report.trainable_pairs) == (3, 5, 4)


def test_a_forced_wrong_format_is_a_report_not_a_crash() -> None:
    report = validate_file(CHAT_SAMPLE, format=DatasetFormat.BRIGHTRUN)
    assert not report.ok and report.errors[0].code == "not_json"
    report = validate_file(SAMPLE, format=DatasetFormat.CHAT_JSONL)
    assert not report.ok


def test_suspicious_content_is_warned_with_its_place(tmp_path: Path) -> None:
    document = sample_document()
    first, second = document["conversations"][0], document["conversations"][1]
    first["training_pairs"][1]["target_response"] = "Here is the plan:\\n\\n1. Save \\"
    first["training_pairs"][3]["training_metadata"]["quality_score"] = 1
    first["training_pairs"][5]["id"] = first["training_pairs"][3]["id"]
    second["training_pairs"][2]["current_user_input"] = "   "
    document["conversations"].append(json.loads(json.dumps(document["conversations"][4])))
    report = validate_file(write_json(tmp_path / "d.json", document))
    assert report.ok
    warnings = {w.code: w for w in report.warnings}
    expected = {
        "truncated_response": (0, 1),
        "escaped_newlines": (0, 1),
        "low_quality_score": (0, 3),
        "duplicate_pair_id": (0, 5),
        "empty_content": (1, 2),
        "duplicate_conversation": (7, None),
    }
    for code, (conversation, pair) in expected.items():
        location = warnings[code].locations[0]
        assert (location.conversation_index, location.pair_index) == (conversation, pair), code
    assert "--no-unescape" in warnings["escaped_newlines"].message
    assert "--keep-truncated" in warnings["truncated_response"].message


# Property-based: whatever is done to a valid file, validation answers with a report.
_BASE = sample_document()
_BASE["conversations"] = _BASE["conversations"][:2]
_BASE_TEXT = json.dumps(_BASE, indent=1)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.append((*prefix, i))
            found += _paths(value, (*prefix, i))
    return found


_ALL_PATHS = _paths(_BASE)
_ODD_VALUES = st.sampled_from([None, 0, 3.5, True, "", "text", [], {}, [1, "a"], {"role": "x"}])


def _mutated(path: tuple[Any, ...], value: Any, delete: bool) -> dict[str, Any]:
    document = json.loads(_BASE_TEXT)
    node = document
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(_ALL_PATHS), value=_ODD_VALUES, delete=st.booleans())
def test_any_field_deleted_or_changed_gives_a_report(
    tmp_path: Path, path: tuple[Any, ...], value: Any, delete: bool
) -> None:
    file = write_json(tmp_path / "mutated.json", _mutated(path, value, delete))
    report = validate_file(file)
    json.dumps(report.to_dict())
    for error in report.errors:
        assert error.location is not None or error.code == "nothing_trainable"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(_BASE_TEXT.encode()) - 1))
def test_any_truncation_gives_a_located_error(tmp_path: Path, cut: int) -> None:
    file = tmp_path / "cut.json"
    file.write_bytes(_BASE_TEXT.encode()[:cut])
    report = validate_file(file)
    assert not report.ok
    assert report.errors[0].code in {"empty_file", "not_json", "not_text"}
    if report.errors[0].code == "not_json":
        assert report.errors[0].location is not None and report.errors[0].location.line is not None

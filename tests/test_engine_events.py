"""Engine events: whole lines, seq monotonic across restarts and writers, readers that wait for newlines."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from engine.events import (
    EVENT_TYPES,
    ErrorEvent,
    EventWriter,
    LogEvent,
    MetricsEvent,
    Stage,
    StageEvent,
    last_seq,
    parse_event,
    read_events,
)
from engine.workdir import Workdir


def test_seq_continues_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventWriter(path, "job") as writer:
        writer.emit(StageEvent(stage=Stage.TRAINING))
        writer.emit(MetricsEvent(step=1, total_steps=4, epoch=0.25, loss=2.0, elapsed=1.0))
    with EventWriter(path, "job") as writer:
        resumed = writer.emit(LogEvent(message="resumed from checkpoint-1"))
    assert resumed.seq == 3
    assert [e["seq"] for _, e in read_events(path)] == [1, 2, 3]
    assert last_seq(path) == 3


def _write_many(path: str, count: int) -> None:
    with EventWriter(Path(path), "job") as writer:
        for i in range(count):
            writer.emit(LogEvent(message=f"line {i} " + "x" * 500))


def test_two_writers_never_interleave_or_repeat_a_seq(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    workers = [multiprocessing.Process(target=_write_many, args=(str(path), 300)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    lines = path.read_text().splitlines()
    assert len(lines) == 600
    seqs = [json.loads(line)["seq"] for line in lines]  # every line parses whole
    assert seqs == list(range(1, 601))


def test_reader_leaves_a_half_written_line_for_later(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with EventWriter(path, "job") as writer:
        writer.emit(LogEvent(message="one"))
    with path.open("a") as handle:
        handle.write('{"seq": 2, "type": "log", "mess')
    events = list(read_events(path))
    assert [e["seq"] for _, e in events] == [1]
    offset = events[-1][0]
    with path.open("a") as handle:
        handle.write('age": "two"}\n')
    assert [e["seq"] for _, e in read_events(path, offset=offset)] == [2]
    assert last_seq(path) == 2


def test_every_event_type_parses_back() -> None:
    assert set(EVENT_TYPES) >= {
        "stage", "metrics", "checkpoint", "log", "warning", "error", "eval", "artifact", "heartbeat", "cost",
    }  # fmt: skip
    error = ErrorEvent(category="out_of_memory", message="m", hint="h", suggested={"batch_size": 2})
    parsed = parse_event(error.model_dump_json())
    assert isinstance(parsed, ErrorEvent) and parsed.suggested == {"batch_size": 2}
    with pytest.raises(ValueError, match="not a lorapod event"):
        parse_event('{"type": "gossip"}')


def test_cancel_requests_and_checkpoint_discovery(tmp_path: Path) -> None:
    workdir = Workdir(tmp_path)
    assert workdir.cancel_requested() is None
    workdir.request_cancel("budget: hard cap reached")
    assert workdir.cancel_requested() == "budget: hard cap reached"
    for step in (5, 10, 20):
        (workdir.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        if step != 20:  # an interrupted save has no trainer state
            (workdir.checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert workdir.newest_checkpoint() == workdir.checkpoints / "checkpoint-10"
    assert workdir.package("abc", "deploy").name == "abc-deploy.zip"

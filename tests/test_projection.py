"""The projection of a run: a repeated brightrun file counted with the dataset code, the cost model beside 6·N."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import presets
from benchmarks import projection as projection_suite
from engine.dataset import ChatTokenizer
from engine.demo import build_demo_tokenizer
from store.errors import CalibrationError
from store.projection import project_run
from tests.bench_helpers import H100, N_70B, gpu_report
from tests.conftest import ROOT

SAMPLE = ROOT / "samples" / "brightrun-sample.json"


def test_the_projection_of_a_small_repeated_file(tmp_path: Path) -> None:
    big = tmp_path / "ten.json"
    assert projection_suite.build_file([SAMPLE], 10, big) == 7
    document = json.loads(big.read_text())
    ids = {c["conversation_metadata"]["conversation_id"] for c in document["conversations"]}
    assert len(document["conversations"]) == len(ids) == 10
    assert document["training_file_metadata"]["total_conversations"] == 10

    spec = presets.get("balanced").to_spec(str(big))
    build_demo_tokenizer(projection_suite._texts(SAMPLE), tmp_path / "tokenizer")
    stats = projection_suite.count_tokens(big, spec, ChatTokenizer.load(tmp_path / "tokenizer"))
    assert stats.examples == 10 and stats.train_examples == 9  # one conversation of ten held out
    assert stats.max_seq_length == spec.hyperparameters.max_seq_length and stats.packing
    tokens = stats.train_tokens * stats.epochs
    assert stats.train_tokens > 0

    on_anchors = project_run(tokens, 70, H100, parameters=N_70B, mfu=0.4)
    assert on_anchors.estimate.throughput_basis["kind"] == "public anchors"
    assert on_anchors.estimate.tokens_per_second == (393.0, 786.0)
    assert on_anchors.ideal_hours() == pytest.approx(6 * N_70B * tokens / 989e12 / 3600)
    assert on_anchors.ideal_hours(0.4) == pytest.approx(on_anchors.ideal_hours() / 0.4)
    assert on_anchors.ideal_cost() == pytest.approx(on_anchors.ideal_hours() * 2.69)
    assert on_anchors.implied_mfu[1] == pytest.approx(786 * 6 * N_70B / 989e12)
    # A GPU bench report feeds it directly: the estimate rests on it, N comes from it.
    measured = project_run(tokens, 70, H100, bench_report=gpu_report(tokens_per_s=1200.0))
    assert measured.estimate.throughput_basis["kind"] == "bench"
    assert measured.parameters == N_70B
    assert measured.estimate.training_hours[0] < on_anchors.estimate.training_hours[0]
    assert measured.as_dict()["ideal"]["at_mfu"]["hours"] == pytest.approx(measured.ideal_hours(0.4))
    with pytest.raises(CalibrationError, match="toy shapes"):
        project_run(tokens, 70, H100, bench_report=gpu_report(toy=True))


def test_the_projection_benchmark_reports_its_figures_and_conditions() -> None:
    results = projection_suite.run()
    names = [r["name"] for r in results]
    assert any("trained tokens, all epochs" in n for n in names)
    assert any(n.startswith("FLOP-bound ideal at 100%") for n in names)
    for r in results:
        assert {"name", "value", "unit", "conditions"} <= set(r)
        assert r["conditions"]
    wall = next(r for r in results if r["name"].endswith("wall time"))
    assert "public anchors" in wall["conditions"] and "H100 SXM" in wall["conditions"]
    first = results[0]["conditions"]
    assert "242 conversations made by repeating" in first and "demo tokenizer" in first

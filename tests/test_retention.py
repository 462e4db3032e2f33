"""The forgetting check: lm-evaluation-harness on a tiny local task, base against adapter; and a whole job that
judges its replies and checks retention, written to eval.json and the eval event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.engine_helpers import SAMPLE, events, run_engine, tiny_spec, write_spec

TASK = FIXTURES / "retention" / "tiny_finance.yaml"


@pytest.fixture
def local_task(tmp_path: Path) -> Path:
    """The tiny task's YAML with its data file's absolute path filled in."""
    task = tmp_path / "tasks" / "tiny_finance.yaml"
    task.parent.mkdir()
    data = FIXTURES / "retention" / "tiny_finance.jsonl"
    task.write_text(TASK.read_text().replace("DATA_FILE", str(data)))
    return task


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_task_paths_name_their_task_and_a_bad_one_says_where(tmp_path: Path, local_task: Path) -> None:
    from engine.retention import RetentionError, task_names

    assert task_names(["arc_easy", str(local_task)]) == (
        ["arc_easy", "lorapod_tiny_finance"], [str(local_task.parent.resolve())],
    )  # fmt: skip
    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("dataset_path: json\n")
    with pytest.raises(RetentionError, match=r"nameless.yaml: no `task: NAME` line"):
        task_names([str(nameless)])
    with pytest.raises(RetentionError, match=r"missing.yaml"):
        task_names([str(tmp_path / "missing.yaml")])


@pytest.mark.slow
def test_lm_eval_scores_base_and_adapter_on_a_local_task(demo_model: Path, local_task: Path) -> None:
    pytest.importorskip("lm_eval")
    from peft import LoraConfig, get_peft_model

    from engine.retention import RETENTION_TARGET, retention_check
    from tests.judge_helpers import demo_peft_model

    model, tokenizer = demo_peft_model(demo_model)
    report = retention_check(model, tokenizer, [str(local_task)], limit=None, batch_size=4, device="cpu")
    task = report["tasks"]["lorapod_tiny_finance"]
    assert task["metric"] == "acc,none"
    # Six questions: every accuracy is a whole number of sixths.
    assert task["base"] * 6 == pytest.approx(round(task["base"] * 6)) and 0 < task["base"] <= 1
    assert task["adapter"] * 6 == pytest.approx(round(task["adapter"] * 6))
    assert task["retained"] == pytest.approx(task["adapter"] / task["base"])
    assert report["retained"] == pytest.approx(task["retained"]) and report["target"] == RETENTION_TARGET

    # An adapter that changes nothing (LoRA's own zero init) keeps exactly the base's score.
    base = model.unload()
    untouched = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    same = retention_check(untouched, tokenizer, [str(local_task)], limit=3, batch_size=2, device="cpu")
    assert same["tasks"]["lorapod_tiny_finance"]["base"] == same["tasks"]["lorapod_tiny_finance"]["adapter"]
    assert same["retained"] == 1.0 and same["limit"] == 3


@pytest.mark.slow
def test_a_job_judges_its_replies_and_checks_retention(demo_model: Path, local_task: Path, tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    spec = tiny_spec(
        demo_model, SAMPLE, *("num_epochs=1", "judge=base", "eval_max_prompts=1", "retention=true",
                      f"retention_tasks={local_task}", "retention_limit=4", "eval_batch_size=2"),
    )  # fmt: skip
    workdir = tmp_path / "work"
    done = run_engine(write_spec(spec, tmp_path / "spec.json"), workdir, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stdout + done.stderr
    evaluation = json.loads((workdir / "eval.json").read_text())
    judge = evaluation["judge"]
    assert judge["pairs"] == 1 and judge["wins"] + judge["ties"] + judge["losses"] + judge["unparsed"] == 1
    assert set(judge["by_criterion"]) == set(spec.hyperparameters.judge_criteria)
    assert len(judge["records"]) == 2 and {r["order"] for r in judge["records"]} == {"base_first", "adapter_first"}
    assert "may be biased" in judge["note"]
    retention = evaluation["retention"]
    assert set(retention["tasks"]) == {"lorapod_tiny_finance"} and retention["target"] == 0.95
    (eval_event,) = [e for e in events(workdir) if e["type"] == "eval"]
    assert eval_event["judge"]["win_rate"] == judge["win_rate"] and "records" not in eval_event["judge"]
    assert eval_event["retention"] == retention
    assert len(eval_event["replies"]) == 1 and {"prompt", "base", "adapter", "meta"} <= set(eval_event["replies"][0])
    # The sample holds out more than one prompt: the output says eval_max_prompts bounded the judging.
    held_out = evaluation["held_out_prompts"]
    assert held_out > 1 and evaluation["bounded"] is True
    log = (workdir / "logs" / "engine.log").read_text()
    assert f"eval_max_prompts=1: 1 of {held_out} held-out prompts answered and judged" in log

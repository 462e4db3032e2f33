"""The job-configuration model: one spec, unique leaf names, clear refusals, a stable training hash."""

from __future__ import annotations

import pytest

from engine import SpecError
from engine.config import (
    SECTIONS,
    JobSpec,
    allowed_range,
    apply_overrides,
    model_size_from_name,
    validate_spec,
)


def _spec(**overrides: str) -> JobSpec:
    return validate_spec(
        apply_overrides({"dataset": {"dataset_path": "d.json"}}, [f"{k}={v}" for k, v in overrides.items()])
    )


def test_leaf_field_names_are_unique_across_sections() -> None:
    seen: dict[str, str] = {}
    for section, model in SECTIONS.items():
        for name in model.model_fields:
            assert name not in seen, f"{name} is in both {seen.get(name)} and {section}"
            assert name not in JobSpec.model_fields, f"{name} shadows a top-level field"
            seen[name] = section


def test_overrides_reach_every_section_by_bare_name() -> None:
    spec = _spec(lora_r="64", gpu_count="2", eval_fraction="0.2", base_model="org/Model-8B", max_hours="none")
    assert spec.hyperparameters.lora_r == 64
    assert spec.resources.gpu_count == 2
    assert spec.dataset.eval_fraction == 0.2
    assert spec.base_model == "org/Model-8B"
    assert spec.resources.max_hours is None


def test_booleans_and_lists_parse_from_text() -> None:
    spec = _spec(load_in_4bit="false", target_modules="q_proj, v_proj", gpu_types='["NVIDIA H200"]')
    assert spec.hyperparameters.load_in_4bit is False
    assert spec.hyperparameters.target_modules == ["q_proj", "v_proj"]
    assert spec.resources.gpu_types == ["NVIDIA H200"]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        _spec(lora_r="0", batch_size="-3", cloud_type="SPOT")
    message = str(caught.value)
    assert "lora_r" in message and "batch_size" in message and "cloud_type" in message


def test_unknown_fields_in_a_spec_file_are_refused() -> None:
    with pytest.raises(SpecError, match="lora_rank: unknown setting"):
        validate_spec({"dataset": {"dataset_path": "d"}, "hyperparameters": {"lora_rank": 8}})


def test_missing_dataset_is_named() -> None:
    with pytest.raises(SpecError, match="dataset: required"):
        validate_spec({})


def test_runpod_jobs_need_a_gpu_type() -> None:
    with pytest.raises(SpecError, match="gpu_types"):
        validate_spec({"dataset": {"dataset_path": "d"}, "resources": {"provider": "runpod", "gpu_types": []}})


def test_training_hash_ignores_identity_and_resources_but_not_training() -> None:
    base = _spec()
    assert base.training_hash() == _spec(cloud_type="COMMUNITY", max_hours="2", name="x").training_hash()
    # Each GPU takes its own batch: the global batch, so the steps, change with the count.
    assert base.training_hash() != _spec(gpu_count="4").training_hash()
    assert base.training_hash() != _spec(lora_r="8").training_hash()
    assert base.training_hash() != _spec(eval_fraction="0.2").training_hash()


def test_spec_round_trips_through_json() -> None:
    spec = _spec(lora_r="8")
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("meta-llama/Meta-Llama-3-70B-Instruct", 70.0),
        ("meta-llama/Llama-3.1-8B", 8.0),
        ("Qwen/Qwen2.5-0.5B-Instruct", 0.5),
        ("/models/llama-13b", 13.0),
        ("demo:tiny-llama", None),
        ("gpt2", None),
    ],
)
def test_model_size_is_read_from_the_name(name: str, size: float | None) -> None:
    assert model_size_from_name(name) == size


def test_allowed_ranges_read_from_the_fields() -> None:
    assert allowed_range("lora_r") == "a whole number ≥ 1 and ≤ 1024"
    assert allowed_range("provider") == "one of: local, runpod"
    assert allowed_range("bf16") == "true or false"

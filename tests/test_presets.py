"""Presets carry the seed's values, validate into the job model, and refuse bad overrides by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import presets
from engine.config import ALL_LINEAR, DEMO_MODEL
from presets import PresetError
from tests.conftest import run_cli

SEED = {
    # lora_r, lora_alpha, lora_dropout, learning_rate, num_epochs, batch_size, gradient_accumulation_steps
    "conservative": (8, 16, 0.05, 1e-4, 2, 2, 8),
    "balanced": (16, 32, 0.05, 2e-4, 3, 4, 4),
    "aggressive": (32, 64, 0.1, 3e-4, 4, 4, 4),
}
FIELDS = (
    "lora_r", "lora_alpha", "lora_dropout", "learning_rate", "num_epochs", "batch_size",
    "gradient_accumulation_steps",
)  # fmt: skip


@pytest.mark.parametrize("name", list(SEED))
def test_seed_presets_carry_the_seed_values(name: str) -> None:
    result = run_cli("presets", "show", name, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    hp = shown["hyperparameters"]
    assert tuple(hp[f] for f in FIELDS) == SEED[name]
    assert hp["target_modules"] == ALL_LINEAR
    assert hp["warmup_ratio"] == 0.03
    assert hp["lr_scheduler_type"] == "cosine"
    assert hp["max_grad_norm"] == 0.3
    assert hp["bf16"] is True
    assert (hp["load_in_4bit"], hp["bnb_4bit_quant_type"], hp["bnb_4bit_use_double_quant"]) == (True, "nf4", True)
    assert (hp["save_steps"], hp["save_every_minutes"]) == (100, 10.0)
    assert (hp["log_every_steps"], hp["status_every_steps"]) == (10, 50)
    assert hp["max_seq_length"] == 4096
    assert shown["base_model"] == "meta-llama/Meta-Llama-3-70B-Instruct"
    assert shown["model_size_b"] == 70.0


def test_balanced_is_the_default_and_smoke_is_a_local_cpu_run() -> None:
    assert presets.default_name() == "balanced"
    smoke = presets.get("smoke")
    assert smoke.base_model == DEMO_MODEL
    assert smoke.resources.provider.value == "local"
    assert smoke.hyperparameters.load_in_4bit is False


def test_every_preset_file_validates_into_a_job_spec() -> None:
    assert set(presets.names()) == {"conservative", "balanced", "aggressive", "smoke"}
    for preset in presets.all_presets().values():
        spec = preset.to_spec("data.json")
        assert spec.preset == preset.name
        assert spec.dataset.dataset_path == "data.json"


def test_override_changes_only_the_named_field() -> None:
    preset = presets.get("balanced").with_overrides(["lora_r=32", "target_modules=q_proj,v_proj"])
    changes = {c.field: (c.before, c.after) for c in presets.get("balanced").diff(preset)}
    assert changes == {"lora_r": (16, 32), "target_modules": (ALL_LINEAR, ["q_proj", "v_proj"])}


def test_a_bad_override_exits_2_naming_the_field_and_its_range() -> None:
    result = run_cli("presets", "diff", "balanced", "--set", "lora_r=-1")
    assert result.exit_code == 2
    assert "lora_r" in result.stderr
    assert "≥ 1" in result.stderr and "≤ 1024" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("lora_rank=8", ["lora_rank", "unknown setting"]),
        ("learning_rate=fast", ["learning_rate", "a number"]),
        ("lr_scheduler_type=step", ["lr_scheduler_type", "cosine", "linear"]),
        ("provider=aws", ["provider", "local", "runpod"]),
        ("lora_r", ["KEY=VALUE"]),
        ("eval_fraction=0.9", ["eval_fraction", "≤ 0.5"]),
    ],
)
def test_bad_overrides_are_refused_with_what_is_allowed(override: str, words: list[str]) -> None:
    with pytest.raises(PresetError) as caught:
        presets.get("balanced").with_overrides([override])
    for word in words:
        assert word in str(caught.value)


def test_diff_between_presets_and_json_output() -> None:
    result = run_cli("presets", "diff", "balanced", "aggressive", "--json")
    assert result.exit_code == 0
    changes = {c["field"]: (c["from"], c["to"]) for c in json.loads(result.stdout)["changes"]}
    assert changes["lora_r"] == (16, 32)
    assert changes["num_epochs"] == (3, 4)
    assert "preset" not in changes


def test_unknown_preset_is_a_usage_error_listing_the_known_ones() -> None:
    result = run_cli("presets", "show", "turbo")
    assert result.exit_code == 2
    assert "balanced" in result.stderr and "smoke" in result.stderr


def test_presets_list_names_every_preset() -> None:
    result = run_cli("presets", "list")
    assert result.exit_code == 0
    for name in ("conservative", "balanced", "aggressive", "smoke"):
        assert name in result.stdout


def test_top_level_overrides_reach_the_job_spec(tmp_path: Path) -> None:
    """--set webhook_url=… and --set name=… were dropped without a word: the job sent no webhooks."""
    preset = presets.get("smoke").with_overrides(["webhook_url=http://127.0.0.1:9/hook", "name=first proof"])
    spec = preset.to_spec("data.json")
    assert spec.webhook_url == "http://127.0.0.1:9/hook"
    assert spec.name == "first proof"
    dataset = tmp_path / "data.json"
    dataset.write_text("{}", encoding="utf-8")
    result = run_cli(
        "spec", "--preset", "smoke", "--dataset", str(dataset), "--set", "webhook_url=http://127.0.0.1:9/hook",
        "--set", "name=first proof",
    )  # fmt: skip
    printed = json.loads(result.stdout)
    assert (printed["webhook_url"], printed["name"]) == ("http://127.0.0.1:9/hook", "first proof")
    named = run_cli("spec", "--preset", "smoke", "--dataset", str(dataset), "--set", "name=a", "--name", "b")
    assert json.loads(named.stdout)["name"] == "b"


def test_spec_refuses_a_fifo_by_name(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "data.json"
    os.mkfifo(fifo)
    result = run_cli("spec", "--preset", "smoke", "--dataset", str(fifo))
    assert result.exit_code == 1 and "not a regular file" in result.stderr

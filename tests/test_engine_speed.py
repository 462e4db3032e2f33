"""Training-speed settings: validated in the spec, refused clearly where the machine cannot run them, and carried
into the model and the trainer; one short CPU training run with settings other than the defaults."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine import SpecError
from engine.config import Hyperparameters, apply_overrides, validate_spec
from engine.speed import attention, check_machine, describe, flattens_rows, optimizer, tokens_per_micro_step
from engine.workdir import Workdir
from tests.engine_helpers import SAMPLE, events, of_type, run_engine, stages, tiny_spec, write_spec

BASE = {"dataset": {"dataset_path": "data.json"}}


def _spec(**hyperparameters: object) -> object:
    return validate_spec({**BASE, "hyperparameters": hyperparameters})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model's tokenizer and shapes with random weights: enough to load and train, in seconds."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from engine.demo import DEMO_CONFIG, build_demo_tokenizer, dataset_texts

    target = tmp_path_factory.mktemp("models") / "random-llama"
    build_demo_tokenizer(dataset_texts(SAMPLE), target)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(target)
    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **DEMO_CONFIG,  # type: ignore[arg-type]
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(target)
    return target


def test_speed_settings_default_to_the_measured_best() -> None:
    hp = Hyperparameters()
    settings = (hp.attn_implementation, hp.liger_kernel, hp.upcast_non_lora, hp.torch_compile)
    assert settings == ("auto", False, True, False)
    assert attention(hp, cuda=False) == "sdpa"
    assert optimizer(hp, cuda=True) == "paged_adamw_8bit"
    assert optimizer(hp, cuda=False) == "adamw_torch"
    assert optimizer(hp.model_copy(update={"load_in_4bit": False}), cuda=True) == "adamw_torch"
    assert optimizer(Hyperparameters(optimizer="adamw_torch_fused"), cuda=True) == "adamw_torch_fused"
    assert tokens_per_micro_step(Hyperparameters(batch_size=2, max_seq_length=4096)) == 8192


def test_speed_settings_are_set_like_any_other_field() -> None:
    data = apply_overrides(BASE, ["attn_implementation=eager", "torch_compile=true", "upcast_non_lora=false"])
    hp = validate_spec(data).hyperparameters
    assert (hp.attn_implementation, hp.torch_compile, hp.upcast_non_lora) == ("eager", True, False)


def test_an_unknown_attention_kernel_is_refused_with_the_choices() -> None:
    with pytest.raises(SpecError) as raised:
        _spec(attn_implementation="flash")
    assert str(raised.value) == "attn_implementation: flash is not allowed — must be one of: auto, sdpa, eager, " + (
        "flash_attention_2"
    )


def test_flash_attention_without_bf16_is_refused_where_the_rule_lives() -> None:
    with pytest.raises(SpecError) as raised:
        _spec(attn_implementation="flash_attention_2", bf16=False)
    message = str(raised.value)
    assert message.startswith("hyperparameters: attn_implementation: flash_attention_2 runs in bf16")
    assert "set bf16=true" in message
    assert _spec(attn_implementation="flash_attention_2", bf16=True)


def test_a_cpu_refuses_gpu_kernels_naming_each_setting_and_what_to_set() -> None:
    hp = Hyperparameters(attn_implementation="flash_attention_2", liger_kernel=True)
    with pytest.raises(SpecError) as raised:
        check_machine(hp, cuda=False)
    lines = str(raised.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("attn_implementation: flash_attention_2 needs a CUDA GPU")
    assert lines[0].endswith("set attn_implementation=auto (sdpa)")
    assert lines[1].startswith("liger_kernel: ") and lines[1].endswith("set liger_kernel=false")
    check_machine(Hyperparameters(attn_implementation="eager", torch_compile=True), cuda=False)  # both run here


def test_a_gpu_without_the_packages_is_told_to_install_them() -> None:
    from transformers.utils import is_flash_attn_2_available, is_kernels_available, is_liger_kernel_available

    if is_flash_attn_2_available() or is_kernels_available() or is_liger_kernel_available():
        pytest.skip("the kernel packages are installed here")
    with pytest.raises(SpecError) as raised:
        check_machine(Hyperparameters(attn_implementation="flash_attention_2", liger_kernel=True), cuda=True)
    assert "flash-attn package" in str(raised.value)
    assert "pip install liger-kernel" in str(raised.value)


def test_auto_attention_is_flash_attention_where_a_gpu_has_it_and_sdpa_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import engine.speed

    auto = Hyperparameters()
    monkeypatch.setattr(engine.speed, "_flash_attention_installed", lambda: True)
    assert attention(auto, cuda=True) == "flash_attention_2"
    assert attention(auto, cuda=False) == "sdpa"
    assert attention(auto.model_copy(update={"bf16": False}), cuda=True) == "sdpa"  # FlashAttention runs bf16 only
    assert attention(Hyperparameters(attn_implementation="eager"), cuda=True) == "eager"
    monkeypatch.setattr(engine.speed, "_flash_attention_installed", lambda: False)
    assert attention(auto, cuda=True) == "sdpa"


def test_only_a_varlen_kernel_gets_the_rows_flattened() -> None:
    assert flattens_rows("flash_attention_2")
    assert flattens_rows("kernels-community/flash-attn2")  # what transformers loads when only kernels is installed
    assert not flattens_rows("sdpa")
    assert not flattens_rows("eager")
    assert not flattens_rows("flex_attention")


def test_the_log_line_states_every_speed_setting() -> None:
    line = describe(Hyperparameters(batch_size=2, max_seq_length=1024, upcast_non_lora=False), cuda=False)
    assert line == (
        "speed settings: attention auto → sdpa (rows kept apart) · optimizer adamw_torch · micro-step 2 × 1024 = "
        "2,048 tokens (packed) · activation checkpointing on · torch.compile off · liger kernels off · embedding, "
        "norms and lm_head in bf16"
    )


def test_the_log_line_says_what_auto_chose_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.speed

    monkeypatch.setattr(engine.speed, "_flash_attention_installed", lambda: True)
    line = describe(Hyperparameters(), cuda=True)
    assert line.startswith("speed settings: attention auto → flash_attention_2 (rows flattened, varlen) · ")
    explicit = describe(Hyperparameters(attn_implementation="eager", packing=False), cuda=True)
    assert explicit.startswith("speed settings: attention eager · ")


def test_the_settings_reach_the_trainer(tmp_path: Path) -> None:
    from engine.training import sft_config

    spec = _spec(liger_kernel=True, torch_compile=True, optimizer="adamw_torch_fused", packing=True)
    args = sft_config(spec, Workdir(tmp_path), has_eval=False, use_cpu=True)
    assert (args.use_liger_kernel, args.torch_compile, args.optim) == (True, True, "adamw_torch_fused")
    assert (args.packing, args.max_length, args.per_device_train_batch_size) == (True, 4096, 4)
    assert sft_config(_spec(), Workdir(tmp_path), has_eval=False, use_cpu=True).optim == "adamw_torch"


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["auto", "eager"])
def test_the_attention_kernel_reaches_the_loaded_model(model_dir: Path, setting: str) -> None:
    from engine.model import load_model

    spec = tiny_spec(model_dir, SAMPLE, f"attn_implementation={setting}")
    model = load_model(spec, str(model_dir), None)
    assert model.get_base_model().config._attn_implementation == ("sdpa" if setting == "auto" else "eager")


@pytest.mark.slow
def test_auto_falls_back_to_sdpa_when_flash_attention_will_not_load(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.model
    from engine.model import load_model

    # As on a GPU whose kernels package finds no FlashAttention build for this torch: transformers refuses it.
    monkeypatch.setattr(engine.model, "attention", lambda hp, cuda: "flash_attention_2")
    auto = load_model(tiny_spec(model_dir, SAMPLE, "attn_implementation=auto"), str(model_dir), None)
    assert auto.get_base_model().config._attn_implementation == "sdpa"
    with pytest.raises(ImportError):  # asked for by name, it is not replaced
        explicit = tiny_spec(model_dir, SAMPLE, "attn_implementation=flash_attention_2", "bf16=true")
        load_model(explicit, str(model_dir), None)


@pytest.mark.slow
@pytest.mark.parametrize("upcast", [True, False])
def test_upcast_non_lora_decides_the_dtype_of_embedding_norms_and_head(model_dir: Path, upcast: bool) -> None:
    import torch

    from engine.model import load_model

    spec = tiny_spec(model_dir, SAMPLE, "load_in_4bit=true", "bf16=true", f"upcast_non_lora={upcast}")
    base = load_model(spec, str(model_dir), None).get_base_model()
    expected = torch.float32 if upcast else torch.bfloat16
    assert base.model.embed_tokens.weight.dtype == expected
    assert base.model.norm.weight.dtype == expected
    assert base.model.layers[0].input_layernorm.weight.dtype == expected
    assert base.model.layers[0].self_attn.q_proj.base_layer.weight.__class__.__name__ == "Params4bit"


@pytest.mark.slow
def test_a_packed_micro_step_holds_at_most_batch_size_sequences_of_max_seq_length(
    model_dir: Path, tmp_path: Path
) -> None:
    from engine.model import load_model, load_tokenizer
    from engine.prepare import prepare
    from engine.training import Progress, build_trainer

    spec = tiny_spec(model_dir, SAMPLE, "max_seq_length=4096", "batch_size=1", "eval_fraction=0")
    workdir = Workdir(tmp_path)
    tokenizer = load_tokenizer(str(model_dir), None)
    prepared = prepare(spec, workdir, tokenizer)
    packs, examples = prepared.stats["packed_sequences"], prepared.stats["train_examples"]
    assert packs < examples  # whole conversations: several fit in one sequence
    trainer, _ = build_trainer(
        spec, workdir, load_model(spec, str(model_dir), None), tokenizer, prepared.train, None,
        emit=lambda event: None, progress=Progress(), should_stop=lambda: None, use_cpu=True,
    )  # fmt: skip
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == packs
    for batch in batches:
        assert batch["input_ids"].numel() <= 1 * 4096
    documents = [int((batch["position_ids"] == 0).sum()) for batch in batches]
    assert max(documents) > 1  # several examples share a micro-step, each restarting its positions
    assert sum(documents) == prepared.stats["train_examples"]


@pytest.mark.slow
def test_a_job_with_a_gpu_kernel_on_a_cpu_fails_at_once_with_the_setting_named(model_dir: Path, tmp_path: Path) -> None:
    spec = tiny_spec(model_dir, SAMPLE, "attn_implementation=flash_attention_2", "bf16=true")
    result = run_engine(write_spec(spec, tmp_path / "spec.json"), tmp_path / "job", timeout=300)
    assert result.returncode == 2
    items = events(tmp_path / "job")
    assert stages(items) == ["preprocessing", "failed"]
    error = of_type(items, "error")[0]
    assert error["category"] == "spec"
    assert error["message"].startswith("attn_implementation: flash_attention_2 needs a CUDA GPU")
    assert error["traceback"] is None
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_a_short_cpu_run_with_other_speed_settings_trains(model_dir: Path, tmp_path: Path) -> None:
    settings = ["attn_implementation=eager", "optimizer=adamw_torch_fused", "packing=true", "max_seq_length=1024"]
    spec = tiny_spec(model_dir, SAMPLE, *settings, "num_epochs=1", "eval_generations=0", "eval_fraction=0")
    result = run_engine(write_spec(spec, tmp_path / "spec.json"), tmp_path / "job", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    items = events(tmp_path / "job")
    assert stages(items)[-1] == "completed"
    logs = [e["message"] for e in of_type(items, "log")]
    assert any(
        m.startswith("speed settings: attention eager (rows kept apart) · optimizer adamw_torch_fused") for m in logs
    ), logs
    losses = [e["loss"] for e in of_type(items, "metrics") if e.get("loss") is not None]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert "attention eager" in (tmp_path / "job" / "logs" / "engine.log").read_text(encoding="utf-8")

"""Exports that deploy: the merged model generates as base plus adapter does, pushes reach a Hub stand-in file by
file with a model card, and the deploy package's vLLM command fits its own layout."""

from __future__ import annotations

import json
import re
import shlex
import zipfile
from pathlib import Path

import pytest

from engine.config import JobSpec
from remote.exports import ExportError, merge_preflight
from tests.conftest import DemoJob, run_lorapod
from tests.standins.hub import HubStandIn

pytestmark = pytest.mark.slow
TOKEN = "hf_standin_token_never_printed"


def _hub_env(demo_job: DemoJob, hub: HubStandIn) -> dict[str, str]:
    return {**demo_job.env, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip


def _package(demo_job: DemoJob, kind: str) -> Path:
    (path,) = (demo_job.home / "artifacts" / "jobs").glob(f"{demo_job.job_id}/*-{kind}.zip")
    return path


def _greedy(model_dir: str, adapter: Path | None, prompt: str, tokens: int = 16) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir if adapter is None else adapter)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    messages = [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return [int(t) for t in out[0, ids["input_ids"].shape[1] :]]


def test_the_merged_export_generates_as_base_plus_adapter_and_pushes_file_by_file(
    demo_job: DemoJob, demo_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    with HubStandIn(TOKEN) as hub:
        result = run_lorapod(
            "export-model", demo_job.job_id[:8], "--merged", "-o", str(out), "--push-to-hub", "acme/demo-merged",
            "--json", env=_hub_env(demo_job, hub), timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        repo = hub.repos["acme/demo-merged"]
    assert TOKEN not in result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["merged"] is True and document["commit_url"].startswith(hub.url)
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "model.safetensors" in files and "config.json" in files and "README.md" in files
    assert not any(name.startswith("adapter") for name in files)  # a plain model, no adapter left to load
    assert json.loads(files["config.json"])["dtype"] == "bfloat16"
    assert repo.files == files  # every file on the Hub, byte for byte, and nothing else
    assert repo.private is False

    adapter = tmp_path / "adapter"
    with zipfile.ZipFile(_package(demo_job, "adapter")) as archive:
        for name in archive.namelist():
            if name.startswith("adapter/"):
                (adapter / Path(name).name).parent.mkdir(parents=True, exist_ok=True)
                (adapter / Path(name).name).write_bytes(archive.read(name))
    for prompt in ("I'm anxious about my retirement savings.", "Should I pay off my card first?"):
        merged = _greedy(str(out), None, prompt)
        assert merged == _greedy(str(demo_model), adapter, prompt)
        assert merged != _greedy(str(demo_model), None, prompt)  # the adapter is in the weights: not the base's reply


def test_the_adapter_pushes_privately_with_a_model_card_from_the_job(demo_job: DemoJob) -> None:
    with HubStandIn(TOKEN) as hub:
        result = run_lorapod(
            "export-model", demo_job.job_id, "--push-to-hub", "acme/demo-adapter", "--private",
            env=_hub_env(demo_job, hub),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        repo = hub.repos["acme/demo-adapter"]
        assert ("POST", "/api/repos/create") in hub.requests
    assert TOKEN not in result.stdout + result.stderr
    assert "pushed to acme/demo-adapter (private)" in result.stdout
    assert repo.private is True
    with zipfile.ZipFile(_package(demo_job, "adapter")) as archive:
        packaged = {Path(n).name: archive.read(n) for n in archive.namelist() if n.startswith("adapter/")}
    card = repo.files.pop("README.md").decode()
    packaged.pop("README.md", None)  # PEFT's placeholder card gives way to the job's
    assert repo.files == packaged  # the adapter package's files, byte for byte

    details = json.loads(run_lorapod("show", demo_job.job_id, "--json", env=demo_job.env).stdout)
    metadata = card.split("---")[1]
    assert 'base_model: "demo:tiny-llama"' in metadata and "library_name: peft" in metadata
    assert details["dataset"]["dataset_sha256"] in card  # the data
    assert "| lora_r | 8 |" in card  # the settings
    assert f"{details['evaluation']['adapter_perplexity']:.4g}" in card  # the evaluation
    assert "LLM judge (pairwise, both orders): not measured" in card
    assert "## Licence" in card and "demo model" in card  # the base model's licence notice


def test_a_push_without_a_token_or_to_a_bad_repo_is_refused_before_any_work(demo_job: DemoJob) -> None:
    no_token = run_lorapod("export-model", demo_job.job_id, "--push-to-hub", "acme/x", env=demo_job.env)
    assert no_token.returncode == 1 and "HF_TOKEN" in no_token.stderr
    bad_repo = run_lorapod("export-model", demo_job.job_id, "--push-to-hub", "no-owner", env=demo_job.env)
    assert bad_repo.returncode == 2 and "owner/name" in bad_repo.stderr
    nothing = run_lorapod("export-model", demo_job.job_id, env=demo_job.env)
    assert nothing.returncode == 2 and "-o FOLDER" in nothing.stderr


def test_a_model_too_big_for_this_machine_is_refused_with_its_numbers(tmp_path: Path) -> None:
    spec = JobSpec.model_validate(
        {"base_model": "acme/Huge-100000B", "dataset": {"dataset_path": "x.json"}, "model_size_b": 100000}
    )
    with pytest.raises(ExportError) as refused:
        merge_preflight(spec, tmp_path / "out")
    message = str(refused.value)
    assert "200000 GB" in message and "--on-pod" in message and "--enable-lora" in message


def test_the_deploy_readmes_vllm_command_fits_the_package(demo_job: DemoJob) -> None:
    with zipfile.ZipFile(_package(demo_job, "deploy")) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
        manifest = json.loads(archive.read("manifest.json"))
        config = json.loads(archive.read("adapter/adapter_config.json"))
    command_text = re.search(r"^\s*(vllm serve .*?)(?:\n\s*#|\n\n)", readme, re.S | re.M)
    assert command_text is not None, readme
    command = shlex.split(command_text.group(1).replace("\\\n", " "))
    assert command[:3] == ["vllm", "serve", manifest["base_model"]]
    assert "--enable-lora" in command
    name, path = command[command.index("--lora-modules") + 1].split("=", 1)
    folder = path.removeprefix("./").rstrip("/")
    # The module points at a folder of the package holding the adapter vLLM loads.
    assert {f"{folder}/adapter_config.json", f"{folder}/adapter_model.safetensors"} <= names
    rank = int(command[command.index("--max-lora-rank") + 1])
    assert rank >= config["r"] and rank in (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted ranks
    assert f'"model": "{name}"' in readme  # the name the API is called with is the module's

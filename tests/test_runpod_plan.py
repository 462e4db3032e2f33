"""Sized before it bills: ``lorapod run --plan`` against the RunPod stand-in, and the refusals made before any
pod is created (a network volume too small, a model whose 4-bit weights and activations do not fit the GPU)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.config import JobSpec
from engine.memory import choose_parallelism, memory_need, shape_for
from presets import get as get_preset
from remote.runpod.sizing import disk_need
from remote.runpod.stock import CUDA_VERSIONS, RUNPOD_CUDA_VERSIONS, STOCK_IMAGE, TORCH_INDEX, cuda_versions_for
from tests.conftest import ROOT
from tests.engine_helpers import SAMPLE
from tests.runpod_helpers import VOLUME, Cluster, demo_cluster, ledger_rows, lorapod
from tui.dialogs.wizard_views import launch_text

SECRETS = {"HF_TOKEN": "hf_PLANSECRET_0b1c2d", "TRAINING_WEBHOOK_SECRET": "whsec_PLANSECRET_9f8e"}
BALANCED = ["run", "--provider", "runpod", "--preset", "balanced", "--dataset", str(SAMPLE)]
H200 = ["--set", 'gpu_types=["NVIDIA H200"]']
__all__ = ["demo_cluster"]  # the module's stand-in RunPod (a fixture)


def balanced(*overrides: str) -> JobSpec:
    return get_preset("balanced").to_spec("data.jsonl", ("provider=runpod", *overrides))


# A micro-batch too big for an 80 GB H100 at 70B.
BIG_BATCH = ["--set", "batch_size=8", "--set", "gradient_accumulation_steps=2"]

# --- sizes ----------------------------------------------------------------------------------------------------


def test_the_disk_holds_llama_3_70b_bf16_weights_and_checkpoints_without_the_hub() -> None:
    need = disk_need(balanced(), hub=False)
    assert need.weights_gb == pytest.approx(141.2, abs=0.1)  # 70.6 B parameters × 2 bytes
    assert "70.6 B parameters" in need.weights_source
    assert need.checkpoints_gb > 5 and need.total_gb >= need.weights_gb + need.checkpoints_gb


def test_a_70b_micro_batch_of_8_x_4096_does_not_fit_80_gb_but_the_balanced_4_x_4096_does() -> None:
    full, half = memory_need(balanced("batch_size=8", "gradient_accumulation_steps=2")), memory_need(balanced())
    assert full is not None and half is not None
    assert 37 <= full.weights_gb <= 40  # NF4 with double quantization
    assert not full.fits(80) and full.fits(141) and half.fits(80)


def test_the_hubs_file_sizes_win_over_parameters_when_the_hub_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    files = [("model-00001-of-00002.safetensors", 90 * 10**9), ("model-00002-of-00002.safetensors", 51 * 10**9),
             ("original/consolidated.00.pth", 140 * 10**9), ("config.json", 700)]  # fmt: skip
    asked: list[tuple[str, bool]] = []

    def model_info(self: object, repo_id: str, **options: object) -> SimpleNamespace:
        asked.append((repo_id, bool(options.get("files_metadata"))))
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=n, size=b) for n, b in files])

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    need = disk_need(balanced())
    assert asked == [("meta-llama/Meta-Llama-3-70B-Instruct", True)]
    assert need.weights_gb == 141.0 and need.weights_source == "the Hub's file metadata"


def test_allowed_cuda_versions_come_from_the_torch_build_the_bootstrap_installs() -> None:
    spec = json.loads((ROOT / "tests" / "fixtures" / "runpod-rest-v1.openapi.json").read_text(encoding="utf-8"))
    accepted = set(
        spec["components"]["schemas"]["PodCreateInput"]["properties"]["allowedCudaVersions"]["items"]["enum"]
    )
    assert set(RUNPOD_CUDA_VERSIONS) == accepted
    assert TORCH_INDEX.endswith("/cu128") and CUDA_VERSIONS == ("12.8", "12.9", "13.0")
    assert cuda_versions_for("https://download.pytorch.org/whl/cu126") == ("12.6", "12.7", "12.8", "12.9", "13.0")
    assert cuda_versions_for("https://download.pytorch.org/whl/cu130/") == ("13.0",)
    dockerfile = (ROOT / "Dockerfile.gpu").read_text(encoding="utf-8")
    assert f"ARG TORCH_INDEX={TORCH_INDEX}\n" in dockerfile  # both paths install the same build


# Llama 3.1 405B at one micro-batch of 4096 tokens: about 256 GB whole, 82 GB a shard over 4 GPUs.
HUGE = ("model_size_b=405", "batch_size=1", "gradient_accumulation_steps=16")


def test_auto_parallelism_shards_only_a_model_that_does_not_fit_one_gpu() -> None:
    seventy, huge = balanced("gpu_count=4"), balanced("gpu_count=4", *HUGE)
    mode, why = choose_parallelism(seventy, 4, 80)
    assert mode == "ddp" and "fits one GPU's 80 GB" in why
    mode, why = choose_parallelism(huge, 4, 141)
    assert mode == "fsdp" and "more than one GPU's 141 GB: sharded over 4 GPUs, about 82 GB each" in why
    assert "still too much" not in why
    whole, shard = memory_need(huge), memory_need(huge, shards=4)
    assert whole is not None and shard is not None and not whole.fits(141) and shard.fits(141)
    # Sharding divides the weights, not a rank's activations: a micro-batch too big is named as such.
    too_big = balanced("gpu_count=2", "batch_size=8", "gradient_accumulation_steps=2")
    assert choose_parallelism(too_big, 2, 80)[1].endswith("still too much: a smaller batch_size is needed")
    assert choose_parallelism(balanced("gpu_count=4", "parallelism=ddp", *HUGE), 4, 141)[0] == "ddp"  # as set
    assert choose_parallelism(huge, 4, None) == (
        "ddp",
        "auto: CPU ranks run data parallel (FSDP shards across GPUs only)",
    )
    unknown = balanced("gpu_count=2", "base_model=/models/mine")
    mode, why = choose_parallelism(unknown, 2, 80)
    assert mode == "ddp" and "size is unknown" in why


def test_shapes_are_read_by_nearest_parameter_count() -> None:
    assert (shape_for(70).layers, shape_for(8).hidden, shape_for(1.1).layers) == (80, 4096, 16)


# --- the plan and the refusals, on the stand-in ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def ordinary(cluster: Cluster) -> Iterator[None]:
    cluster.reset()
    yield
    assert cluster.standin.violations == []
    assert [r for r in cluster.standin.requests if r[0] == "POST"] == []  # nothing that costs money


def _env(cluster: Cluster, home: Path, **extra: str) -> dict[str, str]:
    return cluster.env(home, HF_HUB_OFFLINE="1", **SECRETS, **extra)


def test_the_plan_shows_the_create_request_sizes_estimate_and_limits_and_creates_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.standin.volume_sizes[VOLUME] = 400
    result = lorapod(*BALANCED, *H200, "--plan", "--json", env=_env(cluster, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    plan = json.loads(result.stdout)
    launch = plan["launch"]
    body = launch["create_request"]
    assert body["imageName"] and body["gpuTypeIds"] == ["NVIDIA H200"] and body["networkVolumeId"] == VOLUME
    assert "LORAPOD_SPEC" in body["env"] and "LORAPOD_BOOTSTRAP_TOKEN" in body["env"]  # names, as a list
    # No secret travels in the create request (RunPod shows a pod's env to every reader of the account): they
    # are delivered once the pod is up.
    secret_names = {"SUPABASE_SERVICE_ROLE_KEY", "HF_TOKEN", "TRAINING_WEBHOOK_SECRET", "LORAPOD_POD_TOKEN"}
    assert not secret_names & set(body["env"])
    assert {"HF_TOKEN", "TRAINING_WEBHOOK_SECRET"} <= set(launch["secrets_delivered_after_start"])
    assert launch["disk"]["needed_gb"] >= 141.2 + launch["disk"]["checkpoints_gb"]
    assert launch["disk"]["network_volume"] == {"id": VOLUME, "size_gb": 400}
    assert plan["estimate"]["cost_usd"][1] > 0 and plan["limits"]["ceiling_usd"] > 0
    assert plan["problems"] == []
    for value in SECRETS.values():
        assert value not in result.stdout + result.stderr
    assert ledger_rows(tmp_path, "SELECT count(*) FROM training_jobs") == [(0,)]


def test_without_a_network_volume_the_pods_own_volume_is_sized_for_the_weights(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = _env(cluster, tmp_path, LORAPOD_RUNPOD_NETWORK_VOLUME_ID="")
    result = lorapod(*BALANCED, *H200, "--plan", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads(result.stdout)["launch"]["create_request"]
    assert "networkVolumeId" not in body and body["volumeInGb"] >= 150


def test_the_default_gpus_are_refused_for_70b_at_8_x_4096_with_a_suggestion(cluster: Cluster, tmp_path: Path) -> None:
    cluster.standin.volume_sizes[VOLUME] = 400
    result = lorapod(*BALANCED, *BIG_BATCH, "--plan", env=_env(cluster, tmp_path))
    assert result.returncode == 1
    assert "GB of GPU memory" in result.stdout and "batch_size=4" in result.stdout
    assert "NVIDIA H100 80GB HBM3 (80 GB)" in result.stdout


def test_gpus_that_shard_a_model_hold_what_one_cannot_unless_ddp_is_set(cluster: Cluster, tmp_path: Path) -> None:
    cluster.standin.volume_sizes[VOLUME] = 2000  # 405 B parameters in bf16 on the volume
    huge = [*BALANCED, *H200, *(a for o in (*HUGE, "gpu_count=4") for a in ("--set", o))]
    sharded = lorapod(*huge, "--plan", "--json", env=_env(cluster, tmp_path))
    assert sharded.returncode == 0, sharded.stdout + sharded.stderr
    assert json.loads(sharded.stdout)["launch"]["gpu_types"][0]["fits"] is True
    copies = lorapod(*huge, "--set", "parallelism=ddp", "--plan", env=_env(cluster, tmp_path))
    assert copies.returncode == 1 and "GB of GPU memory" in copies.stdout


def test_a_network_volume_too_small_is_refused_before_any_create_call_naming_both_sizes(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.standin.volume_sizes[VOLUME] = 50
    result = lorapod(*BALANCED, *H200, "--detach", env=_env(cluster, tmp_path))
    assert result.returncode != 0
    needed = disk_need(balanced(), hub=False).total_gb
    assert f"network volume {VOLUME} holds 50 GB; this job needs {needed} GB" in result.stderr
    assert "Traceback" not in result.stderr
    assert ledger_rows(tmp_path, "SELECT count(*) FROM training_jobs") == [(0,)]


def test_with_no_image_set_the_plan_names_runpods_public_image_and_its_start_command(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.standin.volume_sizes[VOLUME] = 400
    env = _env(cluster, tmp_path, LORAPOD_RUNPOD_IMAGE="")
    result = lorapod(*BALANCED, *H200, "--plan", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    launch = json.loads(result.stdout)["launch"]
    body = launch["create_request"]
    assert launch["stock_image"] is True and body["imageName"] == STOCK_IMAGE
    assert body["dockerStartCmd"][:2] == ["bash", "-c"] and "sshd" in body["dockerStartCmd"][2]
    assert body["allowedCudaVersions"] == list(CUDA_VERSIONS)
    assert "LORAPOD_TORCH_INDEX" in body["env"]  # the bootstrap installs the torch build those versions are for
    assert launch["disk"]["needed_gb"] <= 400
    for value in SECRETS.values():
        assert value not in result.stdout + result.stderr


def test_the_wizards_review_shows_the_pod_and_what_refuses_it(cluster: Cluster, tmp_path: Path) -> None:
    cluster.standin.volume_sizes[VOLUME] = 50
    result = lorapod(*BALANCED, *BIG_BATCH, "--plan", "--json", env=_env(cluster, tmp_path))
    plan = json.loads(result.stdout)
    text = launch_text({**plan["launch"], "problems": plan["problems"]}).plain
    assert "NVIDIA H100 80GB HBM3 ✖ does not fit" in text and f"network volume {VOLUME} (50 GB)" in text
    assert f"✖ refused: network volume {VOLUME} holds 50 GB" in text and "LORAPOD_SPEC" in text
    assert SECRETS["HF_TOKEN"] not in text


def test_report_to_wandb_is_refused_for_a_pod_before_anything_is_rented(cluster: Cluster, tmp_path: Path) -> None:
    cluster.standin.volume_sizes[VOLUME] = 400
    result = lorapod(*BALANCED, *H200, "--set", "report_to=wandb", "--detach", env=_env(cluster, tmp_path))
    assert result.returncode != 0
    assert "report_to=wandb" in result.stderr and "report_to=tensorboard" in result.stderr
    assert "Traceback" not in result.stderr and not cluster.standin.pods
    assert ledger_rows(tmp_path, "SELECT count(*) FROM training_jobs") == [(0,)]

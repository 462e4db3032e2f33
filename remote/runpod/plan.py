"""A RunPod job's pod, worked out before any is rented: its environment, sizes, GPU walk and create request.

``plan_pod`` reads only what costs nothing (a network volume's size, the Hub's file metadata) and says what
would stop the job; the provider refuses on those problems before its first ``POST /pods``, and
``lorapod run --plan`` shows the same plan without creating anything.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from engine.config import JobSpec
from engine.memory import MemoryNeed, memory_need
from engine.pod_secrets import BOOTSTRAP_ENV, DIR_ENV, token_sha256
from presets.gpus import catalogue
from remote.runpod.client import RestClient
from remote.runpod.errors import JobDoesNotFit
from remote.runpod.pods import create_request
from remote.runpod.sizing import DiskNeed, disk_need, memory_advice
from remote.runpod.stock import CUDA_VERSIONS, STOCK_IMAGE, TORCH_INDEX, start_command
from store.artifacts import pod_store_environment
from store.errors import StoreError
from store.settings import Settings

# Secrets a pod is handed after it starts (remote.runpod.delivery), never in its create request: RunPod shows a
# pod's env to whoever reads the account, for the life of the pod.
POD_SECRETS = {"hf_token": "HF_TOKEN", "training_webhook_secret": "TRAINING_WEBHOOK_SECRET"}
WATCHDOG_MARGIN_S = 1800.0


def pod_lifetime_s(settings: Settings, spec: JobSpec) -> float:
    """The longest a pod of ``spec`` lives: its maximum duration, its linger and a margin (the pod's watchdog
    deletes it then, and the job's scoped artifact credential expires with it)."""
    hours = spec.resources.max_hours or settings.max_duration_hours
    return hours * 3600 + 2 * settings.runpod_pod_linger_s + WATCHDOG_MARGIN_S


def pod_env(
    settings: Settings,
    job_id: uuid.UUID,
    spec: JobSpec,
    *,
    token: str,
    bootstrap: str,
    public_key: str,
    resume: bool,
    dataset: str | None,
) -> dict[str, str]:
    """Everything the pod's entrypoint reads, none of it secret: the job id, the spec, lorapod's public key,
    the pod API token's sha256 (the token itself stays here) and this attempt's one-time bootstrap token, whose
    only power is to hand the pod its secrets once (``pod_secrets``, delivered after it starts)."""
    env = {
        "LORAPOD_JOB_ID": str(job_id),
        "LORAPOD_SPEC": spec.model_dump_json(),
        "LORAPOD_POD_TOKEN_SHA256": token_sha256(token),
        BOOTSTRAP_ENV: bootstrap,
        DIR_ENV: settings.runpod_secrets_dir,
        "LORAPOD_PUBLIC_KEY": public_key,
        "LORAPOD_WORKSPACE": settings.runpod_volume_mount_path,
        "LORAPOD_LINGER_S": f"{settings.runpod_pod_linger_s:g}",
        "LORAPOD_MAX_SECONDS": f"{pod_lifetime_s(settings, spec):.0f}",
        "LORAPOD_RUNPOD_API_URL": settings.runpod_api_url,
    }
    if dataset:
        env["LORAPOD_AWAIT_INPUT"] = dataset
    if resume:
        env["LORAPOD_RESUME"] = "1"
    env.update(_store_environment(settings, job_id, spec)[0])
    return env


def pod_secrets(settings: Settings, job_id: uuid.UUID, spec: JobSpec) -> dict[str, str]:
    """The secrets one attempt's pod is handed once it is up: the Hugging Face token, the webhook secret and
    an artifact credential that can write only ``jobs/<job id>/`` until the pod's lifetime ends (never the
    service-role key, which stays on this machine)."""
    values = {}
    for name, variable in POD_SECRETS.items():
        value = getattr(settings, name, None)
        if value is not None:
            values[variable] = value.get_secret_value()
    values.update(_store_environment(settings, job_id, spec)[1])
    return values


def _store_environment(settings: Settings, job_id: uuid.UUID, spec: JobSpec) -> tuple[dict[str, str], dict[str, str]]:
    if settings.artifact_store != "supabase":  # a "local" store would be the pod's own disk: nothing is sent
        return {}, {}
    try:
        return pod_store_environment(settings, job_id, valid_for_s=pod_lifetime_s(settings, spec))
    except StoreError as exc:
        raise JobDoesNotFit(f"the artifact store is not configured: {exc}") from None


@dataclass(frozen=True)
class GpuFit:
    id: str
    memory_gb: float | None  # None: not in the catalogue, so not checked
    fits: bool


@dataclass
class PodPlan:
    """What a launch of ``spec`` would ask RunPod for, and what stops it."""

    spec: JobSpec
    image: str
    disk: DiskNeed
    memory: MemoryNeed | None
    gpus: list[GpuFit]
    container_disk_gb: int
    volume_in_gb: int | None  # the pod's own volume; None with a network volume
    network_volume: dict[str, Any] | None  # {"id", "size_gb"}
    volume_mount_path: str
    stock: bool  # RunPod's own image, bootstrapped at start (remote.runpod.stock)
    problems: list[str] = field(default_factory=list)

    @property
    def walk(self) -> list[str]:
        """The GPU types a launch tries, in priority order: those the job fits."""
        return [gpu.id for gpu in self.gpus if gpu.fits]

    def check(self) -> None:
        if self.problems:
            raise JobDoesNotFit("; ".join(self.problems))

    def request(self, job_id: uuid.UUID, gpu_type: str, env: dict[str, str]) -> dict[str, Any]:
        """The body of ``POST /pods`` for one GPU type of the walk."""
        volume = self.network_volume["id"] if self.network_volume else None
        return create_request(
            job_id=job_id, spec=self.spec, gpu_type=gpu_type, image=self.image, env=env | self.stock_env(),
            network_volume_id=volume,
            volume_mount_path=self.volume_mount_path, volume_in_gb=self.volume_in_gb,
            start_cmd=start_command() if self.stock else None, cuda_versions=list(CUDA_VERSIONS),
        )  # fmt: skip

    def stock_env(self) -> dict[str, str]:
        """What the bootstrap needs beside the job's environment: the index of the torch build that
        allowedCudaVersions was set for (PyPI's torch may be built for another CUDA)."""
        return {"LORAPOD_TORCH_INDEX": TORCH_INDEX} if self.stock else {}

    def to_dict(self, env_names: list[str]) -> dict[str, Any]:
        """The plan as shown: the first create request with env names in place of values."""
        first = (self.walk or [gpu.id for gpu in self.gpus] or [""])[0]
        body = self.request(uuid.UUID(int=0), first, {})
        body["name"] = "lorapod-<job id>"
        body["env"] = sorted({*env_names, *self.stock_env()})  # names only: values include secrets and are never shown
        return {
            "stock_image": self.stock,
            "create_request": body,
            "create_request_notes": "one request per GPU type, walked in order; gpuTypeIds holds one type",
            "gpu_types": [{"id": g.id, "memory_gb": g.memory_gb, "fits": g.fits} for g in self.gpus],
            "disk": {
                "weights_gb": self.disk.weights_gb,
                "weights_source": self.disk.weights_source,
                "checkpoints_gb": self.disk.checkpoints_gb,
                "margin_gb": self.disk.margin_gb,
                "needed_gb": self.disk.total_gb,
                "containerDiskInGb": self.container_disk_gb,
                "volumeInGb": self.volume_in_gb,
                "network_volume": self.network_volume,
            },
            "gpu_memory": None
            if self.memory is None
            else {
                "weights_gb": self.memory.weights_gb,
                "lora_gb": self.memory.lora_gb,
                "activations_gb": self.memory.activations_gb,
                "reserve_gb": self.memory.reserve_gb,
                "needed_gb": round(self.memory.total_gb, 1),
            },
            "problems": list(self.problems),
        }


def plan_pod(settings: Settings, spec: JobSpec, rest: RestClient, *, hub: bool = True) -> PodPlan:
    """The pod ``spec`` needs, read without creating anything (a network volume's size is read)."""
    disk = disk_need(spec, hub=hub)
    memory = memory_need(spec)
    ranks = spec.resources.gpu_count
    # Several GPUs may shard a model one GPU cannot hold (parallelism auto picks fsdp then, as the engine does).
    sharded = memory_need(spec, shards=ranks) if ranks > 1 and spec.resources.parallelism != "ddp" else None
    problems: list[str] = []
    image = settings.runpod_image or STOCK_IMAGE
    if not settings.runpod_image and settings.runpod_transport == "http":
        problems.append(
            "RunPod's stock image is started over SSH (its bootstrap files go by SFTP), and runpod_transport is "
            '"http": set it to "auto", or build Dockerfile.gpu and set runpod_image (docs/runpod.md)'
        )
    gpus = []
    for gpu_id in spec.resources.gpu_types:
        known = catalogue().find(gpu_id)
        memory_gb = known.memory_gb if known else None
        fits = memory is None or memory_gb is None or memory.fits(memory_gb)
        fits = fits or (sharded is not None and memory_gb is not None and sharded.fits(memory_gb))
        gpus.append(GpuFit(gpu_id, memory_gb, fits))
    if memory is not None and gpus and not any(g.fits for g in gpus):
        hp = spec.hyperparameters
        held = ", ".join(f"{g.id} ({g.memory_gb:g} GB)" for g in gpus)
        problems.append(
            f"{spec.base_model} needs about {memory.total_gb:.0f} GB of GPU memory at batch_size {hp.batch_size} × "
            f"max_seq_length {hp.max_seq_length} (4-bit weights {memory.weights_gb:g}, LoRA and optimizer "
            f"{memory.lora_gb:g}, activations {memory.activations_gb:g}, CUDA {memory.reserve_gb:g} GB"
            + (f"; sharded over {ranks} GPUs, about {sharded.total_gb:.0f} GB each" if sharded else "")
            + f"); none of {held} holds it — try {memory_advice(spec)}"
        )
    volume_id = spec.resources.network_volume_id or settings.runpod_network_volume_id
    network_volume: dict[str, Any] | None = None
    volume_in_gb: int | None = max(20, spec.resources.container_disk_gb, disk.total_gb)
    if volume_id:
        volume_in_gb = None
        found = rest.get_network_volume(volume_id)
        if found is None:
            problems.append(f"network volume {volume_id} does not exist on this RunPod account")
            network_volume = {"id": volume_id, "size_gb": None}
        else:
            size = int(found.get("size") or 0)
            network_volume = {"id": volume_id, "size_gb": size}
            if size < disk.total_gb:
                problems.append(
                    f"network volume {volume_id} holds {size} GB; this job needs {disk.total_gb} GB on it "
                    f"(weights {disk.weights_gb:g} GB from {disk.weights_source}, checkpoints "
                    f"{disk.checkpoints_gb:g} GB, margin {disk.margin_gb:g} GB) — enlarge it in the RunPod "
                    "console or use another (--set network_volume_id=…)"
                )
    return PodPlan(
        spec=spec, image=image, disk=disk, memory=memory, gpus=gpus,
        container_disk_gb=spec.resources.container_disk_gb, volume_in_gb=volume_in_gb,
        network_volume=network_volume, volume_mount_path=settings.runpod_volume_mount_path,
        stock=not settings.runpod_image, problems=problems,
    )  # fmt: skip

"""lorapod's pods as RunPod sees them: their names, the create request, and what a pod record says."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.config import JobSpec

NAME_PREFIX = "lorapod-"
POD_API_PORT = 8000
SSH_PORT = 22


def pod_name(job_id: uuid.UUID | str) -> str:
    """The name that marks a pod as lorapod's and says which job it runs."""
    return f"{NAME_PREFIX}{job_id}"


def job_id_from_name(name: str | None) -> uuid.UUID | None:
    """The job id in a lorapod pod's name; None for any other pod."""
    if not name or not name.startswith(NAME_PREFIX):
        return None
    try:
        return uuid.UUID(name.removeprefix(NAME_PREFIX))
    except ValueError:
        return None


def create_request(
    *,
    job_id: uuid.UUID,
    spec: JobSpec,
    gpu_type: str,
    image: str,
    env: dict[str, str],
    network_volume_id: str | None,
    volume_mount_path: str,
    volume_in_gb: int | None = None,
    start_cmd: list[str] | None = None,
    cuda_versions: list[str] | None = None,
) -> dict[str, Any]:
    """The body of ``POST /pods`` for one GPU type (the provider walks the priority list one type at a time)."""
    resources = spec.resources
    body: dict[str, Any] = {
        "name": pod_name(job_id),
        "imageName": image,
        "computeType": "GPU",
        "gpuTypeIds": [gpu_type],
        "gpuTypePriority": "custom",
        "gpuCount": resources.gpu_count,
        "cloudType": resources.cloud_type.value,
        "containerDiskInGb": resources.container_disk_gb,
        "volumeMountPath": volume_mount_path,
        "ports": [f"{SSH_PORT}/tcp", f"{POD_API_PORT}/http"],
        "env": env,
    }
    if resources.interruptible:
        body["interruptible"] = True
    if network_volume_id:
        body["networkVolumeId"] = network_volume_id
    else:
        body["volumeInGb"] = volume_in_gb or max(20, resources.container_disk_gb)
    if start_cmd:
        body["dockerStartCmd"] = start_cmd
    if cuda_versions:
        body["allowedCudaVersions"] = cuda_versions
    if resources.cloud_type.value == "COMMUNITY":
        body["supportPublicIp"] = True  # full SSH (and SFTP) needs a public IP
    return body


@dataclass(frozen=True)
class PodInfo:
    """The fields of a pod record lorapod uses."""

    id: str
    name: str
    desired_status: str
    cost_per_hr: float | None
    public_ip: str | None
    ssh_port: int | None
    gpu: str | None
    gpu_count: int
    last_started_at: datetime | None
    network_volume_id: str | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PodInfo:
        mappings = data.get("portMappings") or {}
        ssh = mappings.get(str(SSH_PORT)) if isinstance(mappings, dict) else None
        gpu = data.get("gpu") if isinstance(data.get("gpu"), dict) else {}
        machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
        volume = data.get("networkVolume") if isinstance(data.get("networkVolume"), dict) else {}
        return cls(
            id=str(data["id"]),
            name=str(data.get("name") or ""),
            desired_status=str(data.get("desiredStatus") or "UNKNOWN"),
            cost_per_hr=_number(data.get("costPerHr")),
            public_ip=str(data["publicIp"]) if data.get("publicIp") else None,
            ssh_port=int(ssh) if ssh else None,
            gpu=(gpu or {}).get("id") or (gpu or {}).get("displayName") or (machine or {}).get("gpuTypeId"),
            gpu_count=int((gpu or {}).get("count") or 0),
            last_started_at=_time(data.get("lastStartedAt")),
            network_volume_id=data.get("networkVolumeId") or (volume or {}).get("id"),
        )

    @property
    def job_id(self) -> uuid.UUID | None:
        return job_id_from_name(self.name)

    @property
    def running(self) -> bool:
        return self.desired_status == "RUNNING"

    @property
    def ssh_ready(self) -> bool:
        return self.running and bool(self.public_ip) and self.ssh_port is not None


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None

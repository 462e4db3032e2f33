"""The GPU catalogue: prices, memory, bf16 TFLOP/s and the throughput anchors from ``gpus.toml``."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

CATALOGUE_FILE = Path(__file__).with_name("gpus.toml")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gpu(_Frozen):
    id: str = Field(description="RunPod GPU type id")
    label: str
    memory_gb: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    secure: float = Field(ge=0, description="USD per GPU-hour, secure cloud")
    community: float = Field(ge=0, description="USD per GPU-hour, community cloud")

    def price(self, cloud_type: str) -> float:
        return self.community if cloud_type.upper() == "COMMUNITY" else self.secure


class Throughput(_Frozen):
    reference_gpu: str
    reference_model_b: float = Field(gt=0)
    tokens_per_second_low: float = Field(gt=0)
    tokens_per_second_high: float = Field(gt=0)
    source: str = Field(description="Where the two figures come from (shown with every estimate resting on them)")
    multi_gpu_efficiency: float = Field(gt=0, le=1)


class Overheads(_Frozen):
    pod_start: tuple[float, float]
    weights: tuple[float, float]
    evaluation: tuple[float, float]
    upload: tuple[float, float]


class Catalogue(_Frozen):
    prices_as_of: str
    prices_source: str
    throughput: Throughput
    overheads_minutes: Overheads
    gpu: list[Gpu]

    def find(self, gpu_id: str) -> Gpu | None:
        """A GPU by RunPod id or label, case-insensitively."""
        wanted = gpu_id.strip().lower()
        return next((g for g in self.gpu if wanted in (g.id.lower(), g.label.lower())), None)

    @property
    def reference(self) -> Gpu:
        found = self.find(self.throughput.reference_gpu)
        if found is None:
            raise ValueError(f"{CATALOGUE_FILE}: reference GPU {self.throughput.reference_gpu!r} is not listed")
        return found


@cache
def catalogue() -> Catalogue:
    """The catalogue shipped with lorapod (validated once per process)."""
    return Catalogue.model_validate(tomllib.loads(CATALOGUE_FILE.read_text(encoding="utf-8")))

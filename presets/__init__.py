"""Job presets: small TOML files in this folder, validated into the engine's job-configuration model.

Exceptions::

    PresetError (engine.SpecError)   an unknown preset, or a preset file or override that does not validate
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import SpecError
from engine.config import (
    DEFAULT_BASE_MODEL,
    SECTIONS,
    DatasetSpec,
    FieldChange,
    Hyperparameters,
    JobSpec,
    Resources,
    apply_overrides,
    describe_validation_error,
    diff,
    validate_spec,
)
from presets.rubrics import load_rubric

PRESET_DIR = Path(__file__).parent
# Stands in for the dataset while a preset is shown or compared without one.
_NO_DATASET = "<dataset>"


class PresetError(SpecError):
    """A preset that does not exist or does not validate."""


class Preset(BaseModel):
    """A named starting point for a job: everything in a JobSpec but the dataset file and identity."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    default: bool = False
    base_model: str = DEFAULT_BASE_MODEL
    model_size_b: float | None = Field(None, gt=0)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    resources: Resources = Field(default_factory=Resources)
    dataset: dict[str, Any] = Field(default_factory=dict, description="Dataset defaults (not the path).")
    job: dict[str, Any] = Field(
        default_factory=dict, description="Other top-level job fields set by overrides (name, webhook_url)."
    )

    def to_spec(self, dataset_path: str | None = None, overrides: Iterable[str] = ()) -> JobSpec:
        """The JobSpec this preset gives for a dataset, with ``key=value`` overrides applied."""
        data = {
            "preset": self.name,
            "base_model": self.base_model,
            "model_size_b": self.model_size_b,
            "hyperparameters": self.hyperparameters.model_dump(mode="json"),
            "resources": self.resources.model_dump(mode="json"),
            "dataset": {**self.dataset, "dataset_path": dataset_path or _NO_DATASET},
            **self.job,
        }
        try:
            spec = validate_spec(apply_overrides(data, overrides))
        except SpecError as exc:
            raise PresetError(str(exc)) from None
        hp = spec.hyperparameters
        if hp.judge != "off" and not hp.judge_criteria:  # the engine gets the questions, not a file name
            hp.judge_criteria = load_rubric(hp.judge_rubric)
        return spec

    def with_overrides(self, overrides: Iterable[str]) -> Preset:
        """This preset with ``key=value`` overrides applied and validated (the name stays)."""
        spec = self.to_spec(None, overrides)
        dataset = spec.dataset.model_dump(mode="json", exclude={"dataset_path"}, exclude_defaults=True)
        # Every top-level field an override can set travels on, not only the model: a --set name=… or
        # webhook_url=… that vanished here would leave a job silently without it.
        carried = {"preset", "base_model", "model_size_b", "job_id", *SECTIONS}
        job = {
            key: value
            for key, value in spec.model_dump(mode="json", exclude_defaults=True).items()
            if key not in carried
        }
        return self.model_copy(
            update={
                "base_model": spec.base_model,
                "model_size_b": spec.model_size_b,
                "hyperparameters": spec.hyperparameters,
                "resources": spec.resources,
                "dataset": dataset,
                "job": job,
            }
        )

    def describe(self) -> dict[str, Any]:
        """The preset as plain data: every effective value, defaults included."""
        spec = self.to_spec()
        return {
            "name": self.name,
            "description": self.description,
            "default": self.default,
            "base_model": self.base_model,
            "model_size_b": spec.parameters_b(),
            "hyperparameters": spec.hyperparameters.model_dump(mode="json"),
            "resources": spec.resources.model_dump(mode="json"),
            "dataset": spec.dataset.model_dump(mode="json", exclude={"dataset_path", "dataset_sha256"}),
        }

    def diff(self, other: Preset) -> list[FieldChange]:
        """Fields whose effective values differ from ``other``'s (the preset's own name aside)."""
        return [change for change in diff(self.to_spec(), other.to_spec()) if change.field != "preset"]


def _load(path: Path) -> Preset:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PresetError(f"{path}: {exc}") from None
    try:
        preset = Preset.model_validate({"name": path.stem, **data})
        if preset.dataset:
            DatasetSpec.model_validate({**preset.dataset, "dataset_path": _NO_DATASET})
    except ValidationError as exc:
        raise PresetError(f"{path}:\n{describe_validation_error(exc)}") from None
    return preset


@cache
def all_presets() -> dict[str, Preset]:
    """Every preset file in this folder by name, the default first."""
    presets = [_load(path) for path in sorted(PRESET_DIR.glob("*.toml")) if path.stem != "gpus"]
    presets.sort(key=lambda p: (not p.default, p.name))
    return {preset.name: preset for preset in presets}


def names() -> list[str]:
    return list(all_presets())


def default_name() -> str:
    return next(name for name, preset in all_presets().items() if preset.default)


def get(name: str) -> Preset:
    """The preset called ``name``; PresetError listing the known ones otherwise."""
    try:
        return all_presets()[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; choose one of: {', '.join(names())}") from None

"""Measured throughput from ``python -m engine bench --json`` reports: read, checked, recorded and loaded.

A report gives the tokens/s of a few Llama-3-70B-shaped layers and its extrapolation to the whole model. Once
recorded (``lorapod costs calibrate``), the extrapolated figure becomes the cost model's anchor for the GPU it
was measured on; other GPUs and model sizes scale from it as they scale from the public anchors. The
installation keeps the newest measurement per GPU in ``<data dir>/throughput-calibration.json``.

Only a GPU report calibrates: one measured on a CPU, or with the toy shapes, says nothing about a GPU's speed
and is refused unless forced.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from presets.gpus import Gpu, catalogue
from store.errors import CalibrationError

BENCH_COMMAND = "python -m engine bench --json"
FILE_VERSION = 1
# Keys a report may carry its measurement time under (top level or in its conditions); the file's own
# modification time stands in when none does.
DATE_KEYS = ("measured_at", "when", "date")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Conditions(_Open):
    device: str
    device_name: str
    layers: int = Field(gt=0)
    target_layers: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    batch: int = Field(gt=0)
    load_in_4bit: bool
    activation_checkpointing: bool
    optimizer: str
    toy: bool = False


class _Line(_Open):
    layers: int = Field(gt=0)
    parameters: int = Field(gt=0)
    tokens_per_s: float | None


class _Report(_Open):
    conditions: _Conditions
    measured: _Line
    extrapolated: _Line


@dataclass(frozen=True)
class BenchMeasurement:
    """One GPU's training throughput for one model size, as a bench report measured it."""

    gpu_id: str  # the catalogue GPU it calibrates
    model_b: float  # parameters of the extrapolated model, in billions
    tokens_per_second: float  # the extrapolated model's, on one GPU
    measured_at: str  # ISO date-time
    measured_at_from: str  # "report" or "file date"
    recorded_at: str
    device_name: str
    source: str  # the report's file name
    forced: bool
    conditions: dict[str, Any] = field(default_factory=dict)

    @property
    def date(self) -> str:
        return self.measured_at[:10]

    def describe_conditions(self) -> str:
        """The conditions that move throughput, in a few words."""
        c = self.conditions
        words = [
            f"{c.get('layers')} of {c.get('target_layers')} layers measured",
            f"seq {c.get('seq_len')} × batch {c.get('batch')}",
            "NF4" if c.get("load_in_4bit") else "bf16 weights",
            "checkpointing" if c.get("activation_checkpointing") else "no checkpointing",
            str(c.get("optimizer")),
        ]
        if c.get("attention"):
            words.append(f"{c['attention']} attention")
        # Speed options of newer reports, named only when on.
        words += [
            name for key, name in (("liger_kernel", "Liger kernels"), ("torch_compile", "torch.compile")) if c.get(key)
        ]
        if c.get("toy"):
            words.insert(0, "TOY shapes")
        torch_version = (c.get("versions") or {}).get("torch")
        if torch_version:
            words.append(f"torch {torch_version}")
        return ", ".join(words)

    @property
    def label(self) -> str:
        forced = " (FORCED)" if self.forced else ""
        date = self.date if self.measured_at_from == "report" else f"{self.date}, file date"
        return (
            f"`{BENCH_COMMAND}` on {self.device_name}{forced}, {date}: {figure(self.tokens_per_second)} tokens/s "
            f"for {self.model_b:.3g}B in the {self.conditions.get('target_layers')}-layer extrapolation "
            f"({self.describe_conditions()})"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"label": self.label}


def figure(value: float) -> str:
    """A rate or size for people: whole above 10, three significant digits below (a toy's are tiny)."""
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"


def read_report(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; CalibrationError when the file cannot be read or holds no JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: cannot be read ({exc})") from None
    return parse_report(text, str(path))


def parse_report(text: str, source: str) -> dict[str, Any]:
    """The JSON object in ``text``; CalibrationError when it holds none."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(
            f"{source}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"give the output of `{BENCH_COMMAND}`"
        ) from None
    if not isinstance(data, dict):
        kind = "array" if isinstance(data, list) else "string" if isinstance(data, str) else type(data).__name__
        raise CalibrationError(f"{source}: not a bench report (a JSON {kind}, not an object)")
    return data


def measurement_from_report(
    report: dict[str, Any],
    *,
    gpu_id: str | None = None,
    force: bool = False,
    source: str = "report",
    file_date: datetime | None = None,
    now: datetime | None = None,
) -> tuple[BenchMeasurement, list[str]]:
    """The measurement a bench report gives, and the warnings to show; CalibrationError when it cannot calibrate.

    ``gpu_id`` names the catalogue GPU the report stands for; without it, the GPU it ran on. A report from a
    CPU, with toy shapes, or from another GPU than ``gpu_id`` is refused unless ``force``."""
    try:
        parsed = _Report.model_validate(report)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()[:4])
        raise CalibrationError(f"{source}: not a `{BENCH_COMMAND}` report ({problems})") from None
    conditions, extrapolated = parsed.conditions, parsed.extrapolated
    if not extrapolated.tokens_per_s or extrapolated.tokens_per_s <= 0:
        raise CalibrationError(f"{source}: the report has no extrapolated tokens/s to calibrate with")
    cat = catalogue()
    ran_on = cat.find(conditions.device_name) if conditions.device == "cuda" else None
    warnings: list[str] = []
    forced = False
    not_a_gpu = conditions.device != "cuda" or conditions.toy
    if not_a_gpu:
        what = f"on {conditions.device_name}" + (" with toy shapes" if conditions.toy else "")
        if not force:
            raise CalibrationError(
                f"{source}: measured {what}; it says nothing about a GPU's speed and cannot calibrate GPU "
                f"estimates. Run `{BENCH_COMMAND}` on the GPU (or pass --force to record it anyway)"
            )
        if gpu_id is None:
            raise CalibrationError(f"{source}: measured {what}; --force needs --gpu to say which GPU it stands for")
        forced = True
        warnings.append(
            f"FORCED: a report measured {what} now calibrates {_find(gpu_id).label} estimates; they will be wildly "
            "wrong until a GPU report replaces it (`lorapod costs calibrate --clear` removes it)"
        )
    gpu = _find(gpu_id) if gpu_id is not None else ran_on
    if gpu is None:
        known = "; ".join(g.id for g in cat.gpu)
        raise CalibrationError(
            f"{source}: measured on {conditions.device_name}, which the GPU catalogue does not list (known: {known})"
        )
    if not not_a_gpu and ran_on != gpu:
        if not force:
            raise CalibrationError(
                f"{source}: measured on {conditions.device_name}, not {gpu.id}; calibrate {gpu.label} from a "
                "report measured on it (or pass --force)"
            )
        forced = True
        warnings.append(f"FORCED: a report measured on {conditions.device_name} now calibrates {gpu.label}")
    if not conditions.load_in_4bit:
        warnings.append("measured without 4-bit weights (plain LoRA): QLoRA jobs run at a different speed")
    measured_at, measured_at_from = _measurement_time(report, file_date)
    measurement = BenchMeasurement(
        gpu_id=gpu.id,
        model_b=extrapolated.parameters / 1e9,
        tokens_per_second=float(extrapolated.tokens_per_s),
        measured_at=measured_at,
        measured_at_from=measured_at_from,
        recorded_at=(now or datetime.now(UTC)).isoformat(timespec="seconds"),
        device_name=conditions.device_name,
        source=source,
        forced=forced,
        conditions=conditions.model_dump(),
    )
    return measurement, warnings


def _find(gpu_id: str) -> Gpu:
    gpu = catalogue().find(gpu_id)
    if gpu is None:
        known = "; ".join(f"{g.id} ({g.label})" for g in catalogue().gpu)
        raise CalibrationError(f"unknown GPU {gpu_id!r}; known: {known}")
    return gpu


def _measurement_time(report: dict[str, Any], file_date: datetime | None) -> tuple[str, str]:
    conditions = report.get("conditions") or {}
    for value in [report.get(key) for key in DATE_KEYS] + [conditions.get(key) for key in DATE_KEYS]:
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value).isoformat(timespec="seconds"), "report"
            except ValueError:
                continue
    when = file_date or datetime.now(UTC)
    return when.isoformat(timespec="seconds"), "file date"


def calibrate_from_file(
    path: Path, data_dir: Path, *, gpu_id: str | None = None, force: bool = False
) -> tuple[BenchMeasurement, list[str]]:
    """Read a bench report and record its measurement in the installation (replacing that GPU's previous one)."""
    report = read_report(path)
    file_date = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    measurement, warnings = measurement_from_report(
        report, gpu_id=gpu_id, force=force, source=str(path), file_date=file_date
    )
    record_measurement(data_dir, measurement)
    return measurement, warnings


def record_measurement(data_dir: Path, measurement: BenchMeasurement) -> None:
    """Keep ``measurement`` in the installation, in place of its GPU's previous one."""
    kept = [m for m in load_measurements(data_dir) if m.gpu_id != measurement.gpu_id]
    write_measurements(data_dir, [*kept, measurement])


def calibration_file(data_dir: Path) -> Path:
    return data_dir / "throughput-calibration.json"


def load_measurements(data_dir: Path) -> list[BenchMeasurement]:
    """The recorded measurements, one per GPU; none before the first calibration."""
    path = calibration_file(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot be read ({exc})") from None
    try:
        data = json.loads(text)
        return [BenchMeasurement(**entry) for entry in data["measurements"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(
            f"{path}: damaged ({exc}); delete it or run `lorapod costs calibrate --clear`, then calibrate again"
        ) from None


def write_measurements(data_dir: Path, measurements: list[BenchMeasurement]) -> None:
    path = calibration_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    document = {"version": FILE_VERSION, "measurements": [asdict(m) for m in measurements]}
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def clear_measurements(data_dir: Path, gpu_id: str | None = None) -> list[BenchMeasurement]:
    """Forget the recorded measurements (of one GPU, or all); returns those removed."""
    if gpu_id is None:
        try:
            removed = load_measurements(data_dir)
        except CalibrationError:  # a damaged file: removing it is the remedy
            removed = []
        calibration_file(data_dir).unlink(missing_ok=True)
        return removed
    wanted = _find(gpu_id).id
    current = load_measurements(data_dir)
    removed = [m for m in current if m.gpu_id == wanted]
    write_measurements(data_dir, [m for m in current if m.gpu_id != wanted])
    return removed

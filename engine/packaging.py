"""The packaging stage: three zips per job, each with a manifest of sha256 sums, named by job id.

- adapter: the adapter weights and config, the tokenizer files and the Llama 3 chat template;
- full: the adapter plus the spec, events, metrics.csv, eval.json, the dataset manifest and the logs (with
  report_to=tensorboard, the TensorBoard event files too);
- deploy: the adapter plus inference.py, a pinned requirements.txt, a README and example prompts.

A package that already exists is never overwritten: when a job resumes after packaging, the existing zip is
verified against its recorded checksum and kept.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

from engine import EngineError
from engine.checksums import sha256_file
from engine.config import JobSpec
from engine.events import read_events
from engine.workdir import Workdir

TEMPLATES = Path(__file__).with_name("templates")
# The deploy package's requirements: what inference needs, at the versions the adapter was trained with.
INFERENCE_PACKAGES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors")
METRIC_COLUMNS = (
    "step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second", "gpu_memory_gb",
    "elapsed", "ts",
)  # fmt: skip


class PackageError(EngineError):
    """A package that cannot be built, or an existing one whose checksum no longer matches."""


@dataclass(frozen=True)
class Package:
    kind: str
    path: Path
    size_bytes: int
    sha256: str


def write_metrics_csv(workdir: Workdir) -> Path:
    """metrics.csv from the metrics events (one row per logged step; eval losses fill their step's row)."""
    rows: dict[int, dict[str, Any]] = {}
    for _, event in read_events(workdir.events):
        if event.get("type") != "metrics":
            continue
        row = rows.setdefault(int(event["step"]), {"step": int(event["step"])})
        for column in METRIC_COLUMNS:
            if event.get(column) is not None:
                row[column] = event[column]
    with workdir.metrics_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for step in sorted(rows):
            writer.writerow(rows[step])
    return workdir.metrics_csv


def _adapter_files(workdir: Workdir) -> list[tuple[Path, str]]:
    files = sorted(p for p in workdir.adapter.iterdir() if p.is_file())
    if not any(p.name == "adapter_model.safetensors" for p in files):
        raise PackageError(f"no trained adapter in {workdir.adapter}")
    return [(p, f"adapter/{p.name}") for p in files]


def _requirements() -> str:
    lines = ["# The versions this adapter was trained with."]
    for name in INFERENCE_PACKAGES:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def _readme(spec: JobSpec, evaluation: dict[str, Any]) -> str:
    hp = spec.hyperparameters
    params = spec.parameters_b() or 0.0

    def ppl(key: str) -> str:
        value = evaluation.get(key)
        return f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"

    return Template((TEMPLATES / "README.md.tmpl").read_text(encoding="utf-8")).substitute(
        name=f"lorapod-{(spec.job_id or 'job')[:8]}",
        base_model=spec.base_model,
        job_id=spec.job_id,
        dataset=Path(spec.dataset.dataset_path).name,
        preset=spec.preset or "custom",
        lora_r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_r_pow2=1 << max(hp.lora_r - 1, 1).bit_length(),
        target_modules=", ".join(hp.target_modules),
        epochs=hp.num_epochs,
        learning_rate=hp.learning_rate,
        max_seq_length=hp.max_seq_length,
        base_ppl=ppl("base_perplexity"),
        adapter_ppl=ppl("adapter_perplexity"),
        params_b=f"{params:g}",
        mem_4bit=f"{params * 0.55 + 2:.0f}",
        mem_bf16=f"{params * 2 + 2:.0f}",
    )


def _example_prompts(evaluation: dict[str, Any], system: str | None) -> str:
    lines = [
        json.dumps({"system": system, "prompt": g["prompt"], "reference": g["reference"]}, ensure_ascii=False)
        for g in evaluation.get("generations", [])
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def _write_zip(target: Path, files: Iterable[tuple[Path, str]], extra: dict[str, str], meta: dict[str, Any]) -> None:
    """A zip of ``files`` (source, name inside) and ``extra`` texts, plus manifest.json of their sha256 sums."""
    entries: dict[str, str] = {}
    tmp = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for source, name in files:
            archive.write(source, name)
            entries[name] = sha256_file(source)
        for name, text in extra.items():
            data = text.encode("utf-8")
            archive.writestr(name, data)
            entries[name] = hashlib.sha256(data).hexdigest()
        manifest = {**meta, "files": entries}
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    tmp.replace(target)


def verify_package(path: Path) -> list[str]:
    """Problems found checking a package's files against its manifest (empty when it verifies)."""
    problems = []
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            names = set(archive.namelist()) - {"manifest.json"}
            for name, expected in manifest["files"].items():
                if name not in names:
                    problems.append(f"{name}: missing")
                    continue
                digest = hashlib.sha256(archive.read(name)).hexdigest()
                if digest != expected:
                    problems.append(f"{name}: sha256 {digest[:12]}… expected {expected[:12]}…")
            problems += [f"{name}: not in the manifest" for name in sorted(names - set(manifest["files"]))]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        problems.append(f"{path.name}: cannot read ({exc})")
    return problems


def build_packages(spec: JobSpec, workdir: Workdir, evaluation: dict[str, Any], system: str | None) -> list[Package]:
    """The adapter, full and deploy packages of a finished job (existing ones verified and kept)."""
    job_id = spec.job_id or "job"
    workdir.packages.mkdir(parents=True, exist_ok=True)
    write_metrics_csv(workdir)
    adapter = _adapter_files(workdir)
    meta = {
        "job_id": job_id,
        "base_model": spec.base_model,
        "training_hash": spec.training_hash(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lorapod": _version(),
        "dataset_repairs": _dataset_repairs(workdir),
        # The checkpoint the adapter is: the one with the lowest held-out loss ({step, eval_loss}).
        "best_checkpoint": evaluation.get("best_checkpoint"),
    }
    records = [
        (workdir.spec, "spec.json"), (workdir.events, "events.jsonl"), (workdir.metrics_csv, "metrics.csv"),
        (workdir.eval_file, "eval.json"), (workdir.dataset / "manifest.json", "dataset/manifest.json"),
    ]  # fmt: skip
    logs = sorted(workdir.logs.glob("*.log")) if workdir.logs.is_dir() else []
    boards = sorted(p for p in workdir.tensorboard.rglob("*") if p.is_file()) if workdir.tensorboard.is_dir() else []
    full = adapter + [(p, name) for p, name in records if p.exists()] + [(p, f"logs/{p.name}") for p in logs]
    full += [(p, f"tensorboard/{p.relative_to(workdir.tensorboard).as_posix()}") for p in boards]
    contents: dict[str, tuple[list[tuple[Path, str]], dict[str, str]]] = {
        "adapter": (adapter, {}),
        "full": (full, {}),
        "deploy": (
            [*adapter, (TEMPLATES / "inference.py", "inference.py")],
            {
                "requirements.txt": _requirements(),
                "README.md": _readme(spec, evaluation),
                "example_prompts.jsonl": _example_prompts(evaluation, system),
            },
        ),
    }
    packages = []
    for kind, (files, extra) in contents.items():
        target = workdir.package(job_id, kind)
        if target.exists():
            problems = verify_package(target)
            if problems:
                raise PackageError(f"{target.name} exists but does not verify: {'; '.join(problems[:3])}")
        else:
            _write_zip(target, files, extra, {**meta, "kind": kind})
        packages.append(Package(kind, target, target.stat().st_size, sha256_file(target)))
    return packages


def _dataset_repairs(workdir: Workdir) -> dict[str, Any]:
    """The repairs conversion made, with their counts, as the dataset manifest records them."""
    try:
        repairs = json.loads((workdir.dataset / "manifest.json").read_text(encoding="utf-8")).get("repairs")
    except (OSError, ValueError):
        return {}
    return repairs if isinstance(repairs, dict) else {}


def _version() -> str:
    try:
        return importlib.metadata.version("lorapod")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"

"""Exports that deploy: a job's adapter, or the base model with it merged, written to a folder or pushed to the
Hugging Face Hub with a model card.

The merge runs in the engine (``python -m engine merge``, a subprocess: the dashboard side never loads torch),
on this machine, after a preflight that refuses a model this machine cannot hold (TooBigHere). A RunPod job's
adapter is merged on a pod instead (remote.runpod.merge): the merged files are downloaded here.
The Hub is reached through ``huggingface_hub`` (``HF_ENDPOINT`` names another Hub, as it does for every
client of that library); the token comes from the settings (``HF_TOKEN``), never from the command line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from engine import LorapodError
from engine.config import JobSpec
from remote.runpod.sizing import BF16_BYTES, GB, parameters_b
from store.report.model_card import Licence, known_licence

log = logging.getLogger(__name__)
HUB_TIMEOUT_S = 10.0
# Loading the base in bf16 and merging holds about one copy of the weights plus the adapter and Python.
MEMORY_SHARE = 1.2


class ExportError(LorapodError):
    """An export that cannot be made or pushed; the message says why and what to do instead."""


def unpack_adapter(package: Path, target: Path) -> Path:
    """The ``adapter/`` folder of an adapter (or deploy, or full) package, extracted into ``target``."""
    try:
        with zipfile.ZipFile(package) as archive:
            names = [n for n in archive.namelist() if n.startswith("adapter/") and not n.endswith("/")]
            if "adapter/adapter_config.json" not in names:
                raise ExportError(f"{package.name}: no adapter/adapter_config.json inside")
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                (target / Path(name).name).write_bytes(archive.read(name))
    except (OSError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{package}: cannot read the package ({exc})") from None
    return target


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class TooBigHere(ExportError):
    """A merge this machine cannot hold; a RunPod job's can run on a pod instead (remote.runpod.merge)."""

    def __init__(self, summary: str, advice: str) -> None:
        super().__init__(f"{summary}. {advice}")
        self.summary = summary  # what stops it, without the advice


def _disk_problem(need_gb: float, out_dir: Path) -> str | None:
    existing = next((p for p in [out_dir, *out_dir.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free / GB
    if need_gb * 1.05 > free:
        return f"the merged bf16 weights take {need_gb:.0f} GB and {existing} has {free:.0f} GB free"
    return None


def merge_preflight(spec: JobSpec, out_dir: Path) -> float | None:
    """The merged weights' size in GB (None for a model of unknown size), or TooBigHere when this machine
    cannot hold them in memory or on the disk under ``out_dir``."""
    params = parameters_b(spec)
    if params is None:
        return None  # the demo model, or a local one without model_size_b: the engine checks the disk itself
    need = params * BF16_BYTES
    memory = _memory_bytes()
    problems = [problem for problem in [_disk_problem(need, out_dir)] if problem]
    if memory is not None and need * MEMORY_SHARE > memory / GB:
        problems.append(
            f"merging holds about {need * MEMORY_SHARE:.0f} GB in memory and this machine has {memory / GB:.0f} GB"
        )
    if problems:
        raise TooBigHere(
            f"{spec.base_model} ({params:g} B parameters) is too big to merge here: {'; '.join(problems)}",
            "A RunPod job that ran with a network volume is merged on a pod (export-model --merged --on-pod; "
            "docs/runpod.md); otherwise serve the adapter beside the base model (the deploy package's README "
            "gives the vLLM command, --enable-lora), or merge on a machine with room for it "
            "(README: 'Merge it into the base weights')",
        )
    return need


def download_preflight(spec: JobSpec, out_dir: Path) -> float | None:
    """The merged weights' size in GB (None when unknown), or ExportError when the disk under ``out_dir``
    cannot take them: checked before a merge pod is rented to download them here."""
    params = parameters_b(spec)
    if params is None:
        return None
    need = params * BF16_BYTES
    problem = _disk_problem(need, out_dir)
    if problem:
        raise ExportError(f"{spec.base_model} ({params:g} B parameters) cannot be downloaded here: {problem}")
    return need


def merge_locally(
    adapter_dir: Path, base_model: str, out_dir: Path, *, models_dir: Path, token: str | None
) -> dict[str, Any]:
    """Run ``python -m engine merge``; what it wrote (ExportError with the engine's reason when it fails)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if token:
        env["HF_TOKEN"] = token
    command = [sys.executable, "-m", "engine", "merge", "--adapter", str(adapter_dir), "--base", base_model,
               "--out", str(out_dir), "--models-dir", str(models_dir)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = next((line.removeprefix("error: ") for line in reversed(lines) if line.startswith("error: ")), None)
        raise ExportError(f"the merge failed: {reason or (lines[-1] if lines else f'exit {result.returncode}')}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def hub_licence(base_model: str, *, merged: bool, token: str | None) -> Licence:
    """The base model's licence: the Hub's card metadata when it can be read, else what its name tells."""
    hub_id = link = None
    if "/" in base_model and not Path(base_model).expanduser().exists():
        try:
            from huggingface_hub import HfApi

            card = HfApi(token=token).model_info(base_model, timeout=HUB_TIMEOUT_S).card_data
            if card is not None:
                hub_id, link = card.get("license"), card.get("license_link")
        except Exception as exc:  # offline, gated, unknown: the name still says enough for the notice
            log.info("licence of %s not read from the Hub (%s)", base_model, type(exc).__name__)
    return known_licence(base_model, merged=merged, hub_id=hub_id, link=link)


def push_folder(folder: Path, repo_id: str, *, private: bool, token: str, message: str) -> str:
    """Create ``repo_id`` (kept if it exists) and upload ``folder`` to it in one commit; the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model", commit_message=message)
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "no response"
        raise ExportError(
            f"the Hub refused the push to {repo_id} (HTTP {status}): {str(exc).splitlines()[0]}"
        ) from None
    except OSError as exc:
        raise ExportError(f"the Hub cannot be reached to push {repo_id} ({exc})") from None
    return str(commit.commit_url)

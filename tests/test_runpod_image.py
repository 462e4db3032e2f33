"""The GPU pod image (no Docker engine here): its pins match the train extra, and its entrypoint is sound."""

from __future__ import annotations

import re
import subprocess
import tomllib

from remote.runpod.pods import POD_API_PORT, SSH_PORT
from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile.gpu").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PIN = re.compile(r"\b([A-Za-z0-9_.\-]+)==([0-9][A-Za-z0-9.+\-]*)")


def _pins(lines: list[str]) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for line in lines for m in [PIN.search(line)] if m}


def test_the_base_image_is_cuda_12() -> None:
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert base is not None and "FROM ${CUDA_IMAGE}" in DOCKERFILE
    assert re.fullmatch(r"nvidia/cuda:12\.\d+(\.\d+)?-\S+", base.group(1))


def test_every_package_the_image_pins_matches_the_train_extra_and_the_constraints() -> None:
    train = _pins(PYPROJECT["project"]["optional-dependencies"]["train"])
    constraints = _pins((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines())
    image = {name: version for name, version in _pins(DOCKERFILE.splitlines()).items() if name != "pip"}
    assert image, "the image pins torch explicitly (its CUDA build)"
    for name, version in image.items():
        assert train.get(name) == version, f"Dockerfile.gpu pins {name}=={version}, the train extra {train.get(name)}"
    for name, version in train.items():
        assert constraints.get(name) == version, f"constraints.txt disagrees with the train extra on {name}"
    # Everything else comes from the train extra, installed under constraints.txt.
    assert re.search(r'pip install -c constraints\.txt "\.\[train\]"', DOCKERFILE)
    assert "COPY pyproject.toml constraints.txt" in DOCKERFILE


def test_pip_is_the_version_the_makefile_uses() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert _pins([line for line in DOCKERFILE.splitlines() if "pip==" in line])["pip"] in makefile


def test_sshd_and_the_entrypoint_are_in_the_image() -> None:
    assert "openssh-server" in DOCKERFILE
    assert "COPY pod/entrypoint.sh /opt/lorapod/entrypoint.sh" in DOCKERFILE
    assert re.search(r'ENTRYPOINT \[.*"/opt/lorapod/entrypoint\.sh"\]', DOCKERFILE)
    assert re.search(rf"^EXPOSE {SSH_PORT} {POD_API_PORT}$", DOCKERFILE, re.M)
    entrypoint = ROOT / "pod" / "entrypoint.sh"
    assert entrypoint.stat().st_mode & 0o111, "the entrypoint is executable"
    assert subprocess.run(["bash", "-n", str(entrypoint)], check=False).returncode == 0
    text = entrypoint.read_text(encoding="utf-8")
    assert "PUBLIC_KEY" in text and "authorized_keys" in text and "-m engine pod" in text


def test_the_gpu_extra_is_pinned_and_installed_where_there_is_a_cuda_gpu() -> None:
    gpu = _pins(PYPROJECT["project"]["optional-dependencies"]["gpu"])
    constraints = _pins((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines())
    assert "kernels" in gpu  # FlashAttention-2's prebuilt varlen kernel for attn_implementation=auto
    for name, version in gpu.items():
        assert constraints.get(name) == version, f"constraints.txt disagrees with the gpu extra on {name}"
    assert re.search(r'pip install -c constraints\.txt "\.\[train\]" "\.\[gpu\]"', DOCKERFILE)
    assert "import torch, transformers, peft, trl, bitsandbytes, kernels" in DOCKERFILE
    bootstrap = (ROOT / "pod" / "bootstrap.sh").read_text(encoding="utf-8")
    assert "extras=train,gpu; fi" in bootstrap and '"lorapod[$extras] @ file://$wheel"' in bootstrap

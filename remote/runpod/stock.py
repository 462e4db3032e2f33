"""Jobs on RunPod's stock PyTorch image, with nothing to build: the pod's start command and the files it is sent.

The image is RunPod's own; lorapod changes only its start command (``dockerStartCmd``), a few lines that start
sshd with lorapod's key and wait for ``boot/ready`` in the job's workdir. lorapod then sends, over SFTP, a
wheel of this installation, ``constraints.txt`` and ``pod/bootstrap.sh`` with ``pod/entrypoint.sh``; the
bootstrap installs the ``train`` stack into a virtualenv on the volume and runs the entrypoint, as
Dockerfile.gpu's image does. Dockerfile.gpu stays the faster start: nothing is installed in its pods.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from remote.provider import ProviderError

# RunPod's official PyTorch image (runpod/containers, official-templates/pytorch): release 1.0.3, CUDA 12.8.1,
# Ubuntu 24.04 (Python 3.12, openssh-server). The newest non-development release tag found on 2026-12-05;
# its own torch 2.9.1 is not used — the bootstrap installs the pinned train stack beside it.
STOCK_IMAGE = "runpod/pytorch:1.0.3-cu1281-torch291-ubuntu2404"
# Where the bootstrap takes torch's CUDA build from: the same index as Dockerfile.gpu.
TORCH_INDEX = "https://download.pytorch.org/whl/cu128"
# The values RunPod's create request accepts in allowedCudaVersions (the REST spec's enum), oldest first.
RUNPOD_CUDA_VERSIONS = ("11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.7", "12.8", "12.9", "13.0")


def cuda_versions_for(torch_index: str) -> tuple[str, ...]:
    """The host CUDA versions a torch build from ``torch_index`` runs on: its own (``…/cu128`` is 12.8) and every
    later one RunPod lists, since a newer driver runs an older CUDA build and an older one does not."""
    match = re.search(r"/cu(\d+)(\d)/?$", torch_index)
    if match is None:
        raise ValueError(f"{torch_index}: not a PyTorch CUDA wheel index (…/cuXYZ)")
    built = (int(match.group(1)), int(match.group(2)))
    return tuple(v for v in RUNPOD_CUDA_VERSIONS if tuple(int(part) for part in v.split(".")) >= built)


# allowedCudaVersions in RunPod's create request, from the torch build the bootstrap installs.
CUDA_VERSIONS = cuda_versions_for(TORCH_INDEX)

SOURCE_ROOT = Path(__file__).resolve().parents[2]
POD_DIR = SOURCE_ROOT / "pod"
PACKAGES = ("engine", "presets", "store", "remote", "tui")
# A fixed timestamp makes the wheel's bytes depend on its content only, so the volume's virtualenv is reused.
WHEEL_EPOCH = "315532800"

# The start command. RunPod sets PUBLIC_KEY; LORAPOD_* variables move paths for the test stand-in.
START_SCRIPT = r"""set -eu
keys="${LORAPOD_AUTHORIZED_KEYS:-$HOME/.ssh/authorized_keys}"
mkdir -p "$(dirname "$keys")" && chmod 700 "$(dirname "$keys")" && touch "$keys"
for key in "${PUBLIC_KEY:-}" "${LORAPOD_PUBLIC_KEY:-}"; do
  [ -n "$key" ] && ! grep -qxF -- "$key" "$keys" && printf '%s\n' "$key" >>"$keys"
done
chmod 600 "$keys"
if [ -z "${LORAPOD_SSHD_CONFIG:-}" ]; then ssh-keygen -A >/dev/null; mkdir -p /run/sshd; fi
"${LORAPOD_SSHD:-/usr/sbin/sshd}" -D -e -f "${LORAPOD_SSHD_CONFIG:-/etc/ssh/sshd_config}" &
boot="${LORAPOD_WORKSPACE:-/workspace}/lorapod/jobs/$LORAPOD_JOB_ID/boot"
mkdir -p "$boot"
echo "lorapod: sshd started; waiting for lorapod's files in $boot"
while [ ! -f "$boot/ready" ]; do sleep 1; done
exec bash "$boot/bootstrap.sh"
"""


def start_command() -> list[str]:
    return ["bash", "-c", START_SCRIPT]


def source_digest() -> str:
    """sha256 of what goes into the wheel: a rebuilt wheel only when the code changed."""
    digest = hashlib.sha256()
    digest.update((SOURCE_ROOT / "pyproject.toml").read_bytes())
    for package in PACKAGES:
        for path in sorted((SOURCE_ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(SOURCE_ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def lorapod_wheel(cache_dir: Path) -> Path:
    """A wheel of this installation (``pip wheel --no-deps``), built once per version of the code."""
    if not (SOURCE_ROOT / "pyproject.toml").is_file():
        raise ProviderError(
            f"the stock image needs lorapod's source tree to build its wheel, and {SOURCE_ROOT} has none: "
            "install lorapod from a checkout, or build Dockerfile.gpu and set runpod_image (docs/runpod.md)"
        )
    folder = cache_dir / "wheels" / source_digest()
    found = sorted(folder.glob("lorapod-*.whl"))
    if found:
        return found[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".build-"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(scratch), str(SOURCE_ROOT)],
            env={**os.environ, "SOURCE_DATE_EPOCH": WHEEL_EPOCH}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0 or not list(scratch.glob("lorapod-*.whl")):
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise ProviderError(f"could not build lorapod's wheel for the stock image (pip wheel):\n{tail}")
        try:
            scratch.rename(folder)  # whole or not at all
        except OSError:
            if not list(folder.glob("lorapod-*.whl")):  # else another launch built the same one meanwhile
                raise ProviderError(f"could not keep lorapod's wheel in {folder}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return sorted(folder.glob("lorapod-*.whl"))[0]


def boot_files(cache_dir: Path) -> dict[str, Path]:
    """What the pod's bootstrap needs, by the name it has on the pod."""
    wheel = lorapod_wheel(cache_dir)
    return {
        wheel.name: wheel,
        "constraints.txt": SOURCE_ROOT / "constraints.txt",
        "entrypoint.sh": POD_DIR / "entrypoint.sh",
        "bootstrap.sh": POD_DIR / "bootstrap.sh",
    }

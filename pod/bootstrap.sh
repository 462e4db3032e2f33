#!/usr/bin/env bash
# A job on RunPod's stock PyTorch image (remote/runpod/stock.py), after the pod's start command has started sshd
# and lorapod has put its wheel, constraints.txt and this folder's scripts beside this file over SFTP: the
# `train` stack into a virtualenv on the volume, then the same entrypoint as Dockerfile.gpu.
# The virtualenv is named by the hash of the constraints and the wheel, so later pods on the same network volume
# reuse it; a lock keeps two pods from building the same one at once.
set -euo pipefail

boot="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="${LORAPOD_WORKSPACE:-/workspace}"
base_python="${LORAPOD_BASE_PYTHON:-python3}"
wheel="$(ls "$boot"/lorapod-*.whl)"
key="$(cat "$boot/constraints.txt" "$wheel" | sha256sum | cut -c1-16)"
venvs="$workspace/lorapod/venvs"
venv="$venvs/$key"
log="$boot/bootstrap.log"
mkdir -p "$venvs"

say() { echo "$(date -u +%FT%TZ) $*" | tee -a "$log"; }

started=$(date +%s)
if [ ! -f "$venv/.complete" ]; then
  exec 9>"$venv.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    say "installing the train stack into $venv"
    rm -rf "$venv"
    "$base_python" -m venv "$venv"
    pip=("$venv/bin/python" -m pip install --disable-pip-version-check -c "$boot/constraints.txt")
    if [ -n "${LORAPOD_TORCH_INDEX:-}" ]; then
      # torch's CUDA build comes from PyTorch's own index, as Dockerfile.gpu installs it.
      torch="$(grep -E '^torch==' "$boot/constraints.txt" | head -n 1)"
      "${pip[@]}" --index-url "$LORAPOD_TORCH_INDEX" "$torch" >>"$log" 2>&1
    fi
    extras=train
    # On a CUDA GPU, the gpu extra too: the kernels package, which fetches FlashAttention-2's prebuilt varlen kernel
    # for attn_implementation=auto (flash-attn has no prebuilt wheel on PyPI).
    if [ -n "${LORAPOD_TORCH_INDEX:-}" ] || command -v nvidia-smi >/dev/null 2>&1; then extras=train,gpu; fi
    "${pip[@]}" "lorapod[$extras] @ file://$wheel" >>"$log" 2>&1
    touch "$venv/.complete"
  fi
  exec 9>&-
  say "virtualenv $key ready in $(($(date +%s) - started)) s"
else
  say "reusing virtualenv $key"
fi

export LORAPOD_PYTHON="$venv/bin/python" LORAPOD_SSHD_RUNNING=1
exec bash "$boot/entrypoint.sh"

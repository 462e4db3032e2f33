#!/usr/bin/env bash
# One GPU's figures from one call of at most 8 minutes (benchmarks/gpu_check.py says what it runs):
#   benchmarks/gpu_check.sh           on the GPU: figures into BENCHMARKS.md, the bench report to `lorapod costs calibrate`
#   benchmarks/gpu_check.sh --toy     the same path on a CPU with toy shapes, in seconds (the tests run it)
# Output goes to $OUT (the lent machine's folder that comes back) or benchmarks/results/gpu_check.
# Wheels carried in .whl (../shared/gpu/prepare-wheels.sh: bitsandbytes, trl, datasets, ... that a lent GPU machine
# lacks) are installed first, outside the machine's own packages; --toy installs nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"
out="${OUT:-benchmarks/results}/gpu_check"
args=(--out "$out")
if [ "${1:-}" = "--toy" ]; then
  args+=("$@")
else
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
  fi
  args+=(--report BENCHMARKS.md "$@")
fi
export PYTHONPATH="${PYTHONPATH:-$PWD}" PYTHONUNBUFFERED=1
exec "$python" -m benchmarks.gpu_check "${args[@]}"

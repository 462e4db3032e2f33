#!/usr/bin/env bash
# The lorapod pod image's entrypoint (Dockerfile.gpu): SSH access first, then `python -m engine pod`, which
# serves the pod API, waits for the dataset, runs the engine with the spec from $LORAPOD_SPEC, lingers and
# deletes the pod. tini (-g) passes RunPod's SIGTERM to the whole process group. Paths and programs can be moved by LORAPOD_* variables (the test stand-in does); on
# RunPod the defaults hold. Environment values are passed on untouched: nothing here parses or prints them.
set -euo pipefail

workspace="${LORAPOD_WORKSPACE:-/workspace}"
job_id="${LORAPOD_JOB_ID:?LORAPOD_JOB_ID is not set: this image runs lorapod jobs}"
python="${LORAPOD_PYTHON:-python3}"
sshd="${LORAPOD_SSHD:-/usr/sbin/sshd}"
sshd_config="${LORAPOD_SSHD_CONFIG:-/etc/ssh/sshd_config}"
authorized_keys="${LORAPOD_AUTHORIZED_KEYS:-$HOME/.ssh/authorized_keys}"

# The Hugging Face cache and the demo models live on the volume: weights download once per volume.
export HF_HOME="${HF_HOME:-$workspace/lorapod/huggingface}"
export LORAPOD_MODELS_DIR="${LORAPOD_MODELS_DIR:-$workspace/lorapod/models}"
export LORAPOD_WORKSPACE="$workspace" PYTHONUNBUFFERED=1

workdir="$workspace/lorapod/jobs/$job_id"
logs="$workdir/logs"
mkdir -p "$logs" "$workdir/control" "$HF_HOME"
rm -f "$workdir/control/pod-failed" "$workdir/control/pod.pid"  # an earlier pod's, on the same volume
# Everything this pod says goes to the container log (RunPod's console) and to the volume, where a supervisor
# reads it over SSH when the pod fails to start.
exec > >(tee -a "$logs/pod.log") 2>&1
echo "$(date -u +%FT%TZ) lorapod pod ${RUNPOD_POD_ID:-local} starting job $job_id"

# SSH: the account's key that RunPod passes as PUBLIC_KEY, and the lorapod key pair's public half.
mkdir -p "$(dirname "$authorized_keys")"
chmod 700 "$(dirname "$authorized_keys")"
touch "$authorized_keys"
for key in "${PUBLIC_KEY:-}" "${LORAPOD_PUBLIC_KEY:-}"; do
  if [ -n "$key" ] && ! grep -qxF -- "$key" "$authorized_keys"; then
    printf '%s\n' "$key" >>"$authorized_keys"
  fi
done
chmod 600 "$authorized_keys"
if [ -n "${LORAPOD_SSHD_RUNNING:-}" ]; then
  echo "$(date -u +%FT%TZ) sshd already started by the pod's start command (the stock image)"
elif [ -x "$sshd" ]; then
  if [ -z "${LORAPOD_SSHD_CONFIG:-}" ]; then
    ssh-keygen -A >/dev/null  # a fresh host key per pod, pinned by the supervisor on first use
    mkdir -p /run/sshd
  fi
  "$sshd" -D -e -f "$sshd_config" &
  echo "$(date -u +%FT%TZ) sshd started (pid $!)"
else
  echo "$(date -u +%FT%TZ) no sshd at $sshd: the pod is reachable over its HTTP port only"
fi

code=0
"$python" -m engine pod || code=$?
if [ "$code" -ne 0 ]; then
  # The job process itself failed (a broken image, say): say so where a supervisor looks, and keep sshd up a
  # while so the log can be read, rather than exit into a restart loop at once.
  hold="${LORAPOD_FAILURE_HOLD_S:-300}"
  echo "$(date -u +%FT%TZ) the pod's job process failed (exit code $code); sshd stays up ${hold} s for its log"
  echo "$code" >"$workdir/control/pod-failed"
  sleep "$hold"
fi
exit "$code"

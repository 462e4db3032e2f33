"""A pod's secrets, delivered after it starts: a 0600 file on tmpfs that the engine reads once and removes.

A pod's create request (which RunPod shows to anyone who can read the account, for the life of the pod) holds
no secret. lorapod delivers them once the pod is up, over SFTP on the pinned-host-key SSH link or, without SSH,
through the pod API's one-time ``PUT /secrets``, into ``<secrets dir>/<job id>.json``: a folder on tmpfs
(``/dev/shm/lorapod`` unless ``LORAPOD_SECRETS_DIR`` moves it), never the network volume. The file names the
attempt's bootstrap token, so a file meant for another attempt is refused; ``take_secrets`` reads it and removes
it at once, so whoever reads it next finds it gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import EngineError

DEFAULT_DIR = "/dev/shm/lorapod"
DIR_ENV = "LORAPOD_SECRETS_DIR"
BOOTSTRAP_ENV = "LORAPOD_BOOTSTRAP_TOKEN"
TIMEOUT_ENV = "LORAPOD_SECRETS_TIMEOUT_S"
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
MAX_BYTES = 64 * 1024


class SecretsError(EngineError):
    """The secrets did not arrive, arrived twice, or cannot be kept where they must be."""


def token_sha256(token: str) -> str:
    """What a pod's environment holds in place of its pod API token: the hash opens nothing."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def secrets_path(folder: Path | str, job_id: str) -> Path:
    """Where a job's secrets file lies in the pod."""
    return Path(folder) / f"{job_id}.json"


def encode_secrets(values: dict[str, str], bootstrap: str) -> bytes:
    """The file's bytes: the variables, and the bootstrap token of the attempt they are meant for."""
    return json.dumps({"bootstrap": bootstrap, "env": values}).encode("utf-8")


def filesystem_of(path: Path) -> str | None:
    """The type of the filesystem ``path`` lies on, from /proc/mounts (None where that cannot be read)."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    resolved, best, kind = path.resolve(), -1, None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (resolved == point or point in resolved.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind


def check_folder(folder: Path, workspace: Path | None) -> None:
    """Refuse a secrets folder on the volume or on a disk: secrets live in memory only."""
    resolved = folder.resolve()
    if workspace is not None:
        volume = workspace.resolve()
        if resolved == volume or volume in resolved.parents:
            raise SecretsError(f"{DIR_ENV}={folder} lies on the job's volume; secrets are kept on tmpfs only")
    kind = filesystem_of(resolved if resolved.exists() else resolved.parent)
    if kind is not None and kind not in MEMORY_FILESYSTEMS:
        raise SecretsError(f"{DIR_ENV}={folder} is on a {kind} filesystem, not tmpfs: secrets are kept in memory only")


def write_secrets(folder: Path, job_id: str, data: bytes) -> Path:
    """Write a delivery as the pod API receives it: a 0600 file in a 0700 folder, whole or not at all."""
    if len(data) > MAX_BYTES:
        raise SecretsError("the secrets delivery is too large")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # mkdir's mode is masked by the umask, and an existing folder keeps its own
    target = secrets_path(folder, job_id)
    temp = folder / f".{job_id}.{secrets.token_hex(8)}.partial"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        temp.replace(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def take_secrets(path: Path, bootstrap: str) -> dict[str, str]:
    """Read the secrets file and remove it; SecretsError when it is gone (already taken) or not this attempt's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SecretsError(f"no secrets at {path}: not delivered, or already taken") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    finally:
        path.unlink(missing_ok=True)  # read once: nothing stays behind, whatever the content
    try:
        data = json.loads(raw)
        values = data["env"]
        given = str(data["bootstrap"])
    except (ValueError, KeyError, TypeError):
        raise SecretsError("the secrets file is not a lorapod delivery") from None
    if not bootstrap or not secrets.compare_digest(given.encode(), bootstrap.encode()):
        raise SecretsError("the secrets file was meant for another attempt of this job (its bootstrap token differs)")
    if not isinstance(values, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        raise SecretsError("the secrets file is not a lorapod delivery")
    return dict(values)


def await_secrets(
    path: Path, bootstrap: str, timeout_s: float, stopped: Callable[[], bool] = lambda: False
) -> dict[str, str] | None:
    """Wait for the delivery, then take it; None once ``stopped()`` (a cancel: the engine records it);
    SecretsError when none comes within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if stopped():
            return None
        if time.monotonic() >= deadline:
            raise SecretsError(
                f"no secrets were delivered within {timeout_s:.0f} s (lorapod sends them over SSH or the pod API "
                "once the pod is up); the job cannot reach its model, webhooks or artifact store without them"
            )
        time.sleep(0.2)
    return take_secrets(path, bootstrap)


class SecretsInbox:
    """The pod API's ``PUT /secrets``: one delivery per attempt, for the holder of the pod API token who also
    names this attempt's bootstrap token (``X-Lorapod-Bootstrap``); any later delivery is refused (409)."""

    def __init__(self, folder: Path, job_id: str, bootstrap: str, workspace: Path | None) -> None:
        self.folder = folder
        self.job_id = job_id
        self._bootstrap = bootstrap
        self.workspace = workspace
        self.spent = False

    @classmethod
    def from_env(cls, workdir: Path, env: dict[str, str] | None = None) -> SecretsInbox | None:
        """The inbox of a pod started with a bootstrap token; None elsewhere (no route then)."""
        env = dict(os.environ if env is None else env)
        bootstrap, job_id = env.get(BOOTSTRAP_ENV, ""), env.get("LORAPOD_JOB_ID", "")
        if not bootstrap or not job_id:
            return None
        workspace = env.get("LORAPOD_WORKSPACE")
        return cls(Path(env.get(DIR_ENV) or DEFAULT_DIR), job_id, bootstrap, Path(workspace) if workspace else None)

    async def receive(self, request: Any) -> Any:
        from fastapi.responses import JSONResponse

        given = request.headers.get("x-lorapod-bootstrap", "")
        if not secrets.compare_digest(given.encode(), self._bootstrap.encode()):
            return JSONResponse({"detail": "not this attempt's bootstrap token"}, status_code=403)
        if self.spent:
            return JSONResponse({"detail": "this attempt's secrets were delivered already"}, status_code=409)
        body = await request.body()
        try:
            data = json.loads(body)
            valid = isinstance(data, dict) and secrets.compare_digest(
                str(data.get("bootstrap", "")).encode(), self._bootstrap.encode()
            )
        except ValueError:
            valid = False
        if not valid or len(body) > MAX_BYTES:
            return JSONResponse({"detail": "not a lorapod secrets delivery"}, status_code=400)
        try:
            check_folder(self.folder, self.workspace)
            write_secrets(self.folder, self.job_id, body)
        except (SecretsError, OSError) as exc:
            return JSONResponse({"detail": f"cannot keep the secrets: {exc}"}, status_code=500)
        self.spent = True  # the bootstrap token has done its one job
        return JSONResponse({"delivered": True}, status_code=201)

"""The stand-in's pods: local processes running the real pod entrypoint, each with its own sshd on 127.0.0.1.

A pod's "container" is ``bash pod/entrypoint.sh`` in a session of its own, with the variables RunPod puts in
every pod (RUNPOD_POD_ID, a pod-scoped RUNPOD_API_KEY, PUBLIC_KEY, RUNPOD_PUBLIC_IP, RUNPOD_TCP_PORT_22…)
and a few LORAPOD_* ones that move the image's fixed paths (sshd's config, authorized_keys, the pod API's
port) to this pod's folder. Its volume is mounted by a symlink at the volumeMountPath asked for; a network
volume is a folder that outlives its pods. A container that exits by itself is restarted, as RunPod does.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import ROOT

ENTRYPOINT = ROOT / "pod" / "entrypoint.sh"
# The stock image's Python: the system's, with no lorapod in it (the bootstrap installs lorapod into a virtualenv).
STOCK_PYTHON = Path("/usr/bin/python3")
SSHD = Path("/usr/sbin/sshd")
ACCOUNT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8bTHYtV1F9o1mS6v8rRzQ0qvQwV4hN8vYp6c3f2b1k account@runpod"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_host_key(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything under it (sshd's connection handlers start sessions of their own)."""
    try:
        root = psutil.Process(pid)
        victims = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=10)


@dataclass
class StandInPod:
    id: str
    name: str
    body: dict[str, Any]
    gpu: str
    cost_per_hr: float
    folder: Path
    mount: Path
    volume: Path
    public_ip: bool
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    pod_key: str = field(default_factory=lambda: "rpa_pod_" + secrets.token_hex(16))
    ssh_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    desired_status: str = "RUNNING"
    ready_at: float = 0.0
    process: subprocess.Popen[bytes] | None = None
    extra_sshd: list[subprocess.Popen[bytes]] = field(default_factory=list)
    restarts: int = 0
    env_overrides: dict[str, str] = field(default_factory=dict)
    _stopped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what RunPod reports -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.process is not None and time.monotonic() >= self.ready_at

    def record(self) -> dict[str, Any]:
        body = self.body
        mapped = self.ready and self.public_ip and self.desired_status == "RUNNING"
        record: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "desiredStatus": self.desired_status,
            "costPerHr": self.cost_per_hr,
            "adjustedCostPerHr": self.cost_per_hr,
            "image": body.get("imageName", ""),
            "gpu": {"id": self.gpu, "count": int(body.get("gpuCount", 1)), "displayName": self.gpu},
            "interruptible": bool(body.get("interruptible", False)),
            "containerDiskInGb": int(body.get("containerDiskInGb", 50)),
            "volumeMountPath": str(body.get("volumeMountPath", "/workspace")),
            "ports": list(body.get("ports", [])),
            "env": dict(body.get("env", {})),
            "publicIp": "127.0.0.1" if mapped else None,
            "portMappings": {"22": self.ssh_port} if mapped else {},
            "lastStartedAt": self.created.isoformat().replace("+00:00", "Z"),
            "machineId": "standin-machine",
        }
        if body.get("networkVolumeId"):
            record["networkVolume"] = {"id": body["networkVolumeId"], "name": "stand-in volume", "size": 50}
        return record

    # --- the container ----------------------------------------------------------------------------------

    def environment(self, user_env: dict[str, str]) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("LORAPOD_", "RUNPOD_"))}
        env.pop("HF_TOKEN", None)
        env.update(user_env)
        env.update(
            RUNPOD_POD_ID=self.id,
            RUNPOD_API_KEY=self.pod_key,
            PUBLIC_KEY=ACCOUNT_KEY,
            RUNPOD_GPU_COUNT=str(self.body.get("gpuCount", 1)),
            LORAPOD_SSHD_CONFIG=str(self.folder / "sshd_config"),
            LORAPOD_AUTHORIZED_KEYS=str(self.folder / "authorized_keys"),
            LORAPOD_PYTHON=sys.executable,
            LORAPOD_POD_API_PORT=str(self.api_port),
            PYTHONPATH=str(ROOT),
            HF_HUB_OFFLINE="1",
        )
        if self.public_ip:
            env.update(RUNPOD_PUBLIC_IP="127.0.0.1", RUNPOD_TCP_PORT_22=str(self.ssh_port))
        env.update(self.env_overrides)
        return env

    def write_sshd_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        make_host_key(self.folder / "ssh_host_ed25519_key")
        (self.folder / "sshd_config").write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nHostKey {self.folder / 'ssh_host_ed25519_key'}\n"
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}\nPidFile {self.folder / 'sshd.pid'}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n",
            encoding="utf-8",
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory

    def mount_volume(self) -> None:
        self.volume.mkdir(parents=True, exist_ok=True)
        self.mount.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.mount.with_name(f".{self.mount.name}.{self.id}")
        tmp.symlink_to(self.volume, target_is_directory=True)
        tmp.replace(self.mount)

    def start(self, delay: float) -> None:
        """Start the container after ``delay`` seconds (an image pull), then keep it running."""
        self.ready_at = time.monotonic() + delay
        threading.Thread(target=self._supervise, args=(delay,), name=f"pod-{self.id}", daemon=True).start()

    @property
    def stock(self) -> bool:
        """A pod with a start command of its own: RunPod's stock image, which holds no lorapod."""
        return bool(self.body.get("dockerStartCmd"))

    def _spawn(self) -> None:
        self.mount_volume()
        log = (self.folder / "container.log").open("ab")
        env = self.environment({str(k): str(v) for k, v in self.body.get("env", {}).items()})
        command = ["bash", str(ENTRYPOINT)]
        if self.stock:
            # Nothing of this checkout reaches the pod but what lorapod sends it: no PYTHONPATH, no interpreter
            # of ours, and a working directory outside the checkout.
            command = [str(part) for part in self.body["dockerStartCmd"]]
            # PyTorch's CUDA index is out of reach here: the bootstrap takes torch from this machine's index.
            for name in ("PYTHONPATH", "LORAPOD_PYTHON", "VIRTUAL_ENV", "LORAPOD_TORCH_INDEX"):
                env.pop(name, None)
            env["LORAPOD_BASE_PYTHON"] = str(STOCK_PYTHON)
        self.process = subprocess.Popen(
            command,
            cwd=self.folder if self.stock else ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _supervise(self, delay: float) -> None:
        time.sleep(delay)
        while True:
            with self._lock:
                if self._stopped:
                    return
                if self.restarts == 0:
                    self.write_sshd_config()
                self._spawn()
                process = self.process
            assert process is not None
            process.wait()
            with self._lock:
                if self._stopped:
                    return
                kill_tree(process.pid)  # the container ended: nothing of it runs on
                self.restarts += 1
            time.sleep(1.0)  # RunPod restarts a container that exits

    def stop(self, status: str) -> None:
        """Kill everything the pod runs (a delete, or a preemption) and report ``status``."""
        with self._lock:
            self._stopped = True
            self.desired_status = status
            process, extra = self.process, list(self.extra_sshd)
        if process is not None:
            kill_tree(process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for sshd in extra:
            kill_tree(sshd.pid)
            sshd.wait()

    def replace_host_key(self) -> None:
        """Restart this pod's sshd on the same port with a new host key (what an impostor would look like)."""
        pid_file = self.folder / "sshd.pid"
        old = int(pid_file.read_text().strip())
        kill_tree(old)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(old) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid_file.unlink(missing_ok=True)
        make_host_key(self.folder / "ssh_host_ed25519_key")
        sshd = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.folder / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "sshd-replaced.log").open("ab"),
        )
        self.extra_sshd.append(sshd)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.ssh_port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError("the replacement sshd did not start")

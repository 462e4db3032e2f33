"""The SSH transport (paramiko): key login with lorapod's own key pair, the pod's host key pinned on first use,
events by tailing events.jsonl from a byte offset, files over SFTP."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import shlex
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.pod_secrets import MEMORY_FILESYSTEMS
from remote.provider import ArtifactError
from remote.runpod.errors import HostKeyChanged, PodJobFailed, SecretsRefused, TransportError
from remote.runpod.transport import EventFeed, PodEndpoint, PodTransport, finish_download, open_download
from store.host_keys import Pin

log = logging.getLogger(__name__)

KEY_NAME = "lorapod_ed25519"
CONNECT_TIMEOUT_S = 15.0
QUIET_LIMIT_S = 75.0  # the engine writes a heartbeat every 30 s: this much silence means a dead connection
CHUNK = 1 << 20


class HostKeyPins(Protocol):
    """Where pinned host keys are kept (the ledger's host_keys table)."""

    def get(self, host: str, port: int) -> Pin | None: ...

    def pin(self, pin: Pin) -> Pin: ...

    def forget(self, host: str, port: int) -> bool: ...


def ensure_key_pair(folder: Path) -> tuple[paramiko.PKey, str]:
    """lorapod's SSH key pair in ``folder`` (made once, private half 0600), and the public line for pods."""
    private = folder / KEY_NAME
    public = folder / f"{KEY_NAME}.pub"
    if not private.exists():
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        opened = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        tmp = private.with_name(f".{KEY_NAME}.tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o600)
        tmp.replace(private)
        public.write_text(opened.decode() + " lorapod\n", encoding="utf-8")
    pkey = paramiko.Ed25519Key.from_private_key_file(str(private))
    return pkey, f"{pkey.get_name()} {pkey.get_base64()} lorapod"


def fingerprint(key: paramiko.PKey) -> str:
    """The key's SHA256 fingerprint as OpenSSH prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class SshSession:
    """One authenticated SSH connection to a pod, made again when it drops; its host key must match the pin."""

    def __init__(self, host: str, port: int, user: str, key: paramiko.PKey, pins: HostKeyPins) -> None:
        self.host, self.port, self.user = host, port, user
        self._key = key
        self._pins = pins
        self._transport: paramiko.Transport | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SshSession({self.user}@{self.host}:{self.port})"

    def transport(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is not None and self._transport.is_active():
                return self._transport
            self._transport = self._connect()
            return self._transport

    def _connect(self) -> paramiko.Transport:
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise TransportError(f"SSH {where}: {exc.strerror or type(exc).__name__}") from None
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=CONNECT_TIMEOUT_S)
            self._verify(transport.get_remote_server_key())
            transport.auth_publickey(self.user, self._key)
        except HostKeyChanged:
            transport.close()
            raise
        except paramiko.AuthenticationException:
            transport.close()
            raise TransportError(
                f"SSH {where}: the pod refused lorapod's key for {self.user!r} (is LORAPOD_PUBLIC_KEY in its "
                "authorized_keys? The image's entrypoint adds it)"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise TransportError(f"SSH {where}: {exc or type(exc).__name__}") from None
        transport.set_keepalive(15)
        return transport

    def _verify(self, key: paramiko.PKey) -> None:
        seen = Pin(self.host, self.port, key.get_name(), key.get_base64(), fingerprint(key))
        pinned = self._pins.get(self.host, self.port) or self._pins.pin(seen)
        if pinned.key_base64 != seen.key_base64:
            raise HostKeyChanged(
                f"the SSH host key of {self.host}:{self.port} has changed: lorapod pinned {pinned.fingerprint_sha256} "
                f"({pinned.key_type}) on first use and now sees {seen.fingerprint_sha256} ({seen.key_type}). "
                "lorapod refuses to connect: something may be intercepting the connection. If the pod was "
                f"replaced on purpose, forget the old key with `lorapod pods --forget-host-key "
                f"{self.host}:{self.port}`; meanwhile `lorapod config set runpod_transport http` follows the job "
                "over its HTTPS port"
            )

    def exec(self, command: str, timeout: float = 60.0) -> tuple[int, bytes]:
        """Run a command; its exit status and its output."""
        try:
            channel = self.transport().open_session(timeout=CONNECT_TIMEOUT_S)
            channel.settimeout(timeout)
            channel.exec_command(command)
            output = b"".join(iter(lambda: channel.recv(CHUNK), b""))
            return channel.recv_exit_status(), output
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SSH {self.host}:{self.port}: {exc or type(exc).__name__}") from None

    def sftp(self) -> paramiko.SFTPClient:
        try:
            client = paramiko.SFTPClient.from_transport(self.transport())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SFTP {self.host}:{self.port}: {exc or type(exc).__name__}") from None
        if client is None:
            raise TransportError(f"SFTP {self.host}:{self.port}: no SFTP subsystem")
        return client

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None


class SshFeed(EventFeed):
    """``tail -F`` of events.jsonl from the byte after the last complete line read."""

    name = "ssh"

    def __init__(self, session: SshSession, path: str, after_seq: int) -> None:
        self.session = session
        self.path = path
        self.offset = 0
        self._channel: paramiko.Channel | None = None
        super().__init__(after_seq)

    def follow(self, after_seq: int) -> Iterator[dict[str, Any]]:
        try:
            channel = self.session.transport().open_session(timeout=CONNECT_TIMEOUT_S)
            channel.settimeout(1.0)
            channel.exec_command(f"exec tail -s 0.25 -c +{self.offset + 1} -F {shlex.quote(self.path)} 2>/dev/null")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SSH tail: {exc or type(exc).__name__}") from None
        self._channel = channel
        self.mark_alive()
        pending, quiet = b"", 0.0
        try:
            while not self._stop.is_set():
                try:
                    data = channel.recv(CHUNK)
                except TimeoutError:
                    quiet += 1.0
                    if quiet >= QUIET_LIMIT_S or channel.closed or not self.session.transport().is_active():
                        raise TransportError(f"SSH tail: nothing for {quiet:.0f} s") from None
                    continue
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    raise TransportError(f"SSH tail: {exc or type(exc).__name__}") from None
                if not data:
                    raise TransportError("SSH tail: the connection closed")
                quiet = 0.0
                *lines, pending = (pending + data).split(b"\n")
                for raw in lines:
                    self.offset += len(raw) + 1
                    event = _parse(raw)
                    if event is not None and int(event.get("seq", 0)) > after_seq:
                        after_seq = int(event["seq"])
                        yield event
        finally:
            channel.close()

    def interrupt(self) -> None:
        if self._channel is not None:
            self._channel.close()


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "seq" in event else None


class SshTransport(PodTransport):
    """The pod over SSH: needs its public IP and port 22 mapped."""

    name = "ssh"

    def __init__(self, endpoint: PodEndpoint, user: str, key: paramiko.PKey, pins: HostKeyPins) -> None:
        super().__init__(endpoint)
        self.root = PurePosixPath(endpoint.workdir)
        self.session = (
            SshSession(endpoint.ssh_host, endpoint.ssh_port, user, key, pins)
            if endpoint.ssh_host and endpoint.ssh_port
            else None
        )

    @property
    def available(self) -> bool:
        return self.session is not None

    def _session(self) -> SshSession:
        if self.session is None:
            raise TransportError("the pod has no public IP with port 22 mapped")
        return self.session

    def _path(self, *parts: str) -> str:
        return str(self.root.joinpath(*parts))

    def check(self) -> None:
        """The pod answers and its job process lives (a container in a crash loop still runs sshd)."""
        failed, pid_file = shlex.quote(self._path("control/pod-failed")), shlex.quote(self._path("control/pod.pid"))
        status, output = self._session().exec(
            f'if [ -f {failed} ]; then cat {failed}; exit 3; fi; pid=$(cat {pid_file} 2>/dev/null) && kill -0 "$pid"'
        )
        if status == 3:
            code = output.decode(errors="replace").strip()
            raise PodJobFailed(f"the pod's job process failed (exit code {code})")
        if status != 0:
            raise TransportError("SSH: the pod answers, but its job process is not running (yet)")

    def events(self, after_seq: int) -> EventFeed:
        return SshFeed(self._session(), self._path("events.jsonl"), after_seq)

    def _read(self, relative: str, offset: int, limit: int) -> tuple[bytes, int] | None:
        try:
            with self._session().sftp() as sftp:
                size = sftp.stat(self._path(relative)).st_size or 0
                with sftp.open(self._path(relative), "rb") as remote:
                    remote.seek(offset)
                    return remote.read(limit), size
        except FileNotFoundError:
            return None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SFTP read {relative}: {exc or type(exc).__name__}") from None

    def read_log(self, offset: int) -> tuple[str, int]:
        found = self._read("logs/engine.log", offset, CHUNK)
        if found is None:
            return "", offset
        data = found[0]
        cut = len(data) if len(data) < CHUNK else data.rfind(b"\n") + 1 or len(data)
        return data[:cut].decode("utf-8", errors="replace"), offset + cut

    def tail_pod_log(self, max_bytes: int = 4000) -> str:
        try:
            with self._session().sftp() as sftp:
                size = sftp.stat(self._path("logs/pod.log")).st_size or 0
        except FileNotFoundError:
            return ""
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SFTP: {exc or type(exc).__name__}") from None
        found = self._read("logs/pod.log", max(0, size - max_bytes), max_bytes)
        return found[0].decode("utf-8", errors="replace") if found else ""

    def cancel(self, reason: str) -> None:
        request = self._path("control/cancel")
        try:
            with self._session().sftp() as sftp:
                try:
                    sftp.stat(request)
                    return  # already requested: a second signal would mean "stop now" to the engine
                except FileNotFoundError:
                    pass
                with sftp.open(request + ".tmp", "wb") as handle:
                    handle.write(reason.encode("utf-8"))
                sftp.posix_rename(request + ".tmp", request)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SFTP cancel: {exc or type(exc).__name__}") from None
        # Only the engine of this workdir: a stale engine.pid may name any process by now (the pod API checks
        # the same way, engine.workdir.engine_alive).
        pid_file = shlex.quote(self._path("engine.pid"))
        workdir = shlex.quote(str(self.root))
        self._session().exec(
            f'pid=$(cat {pid_file} 2>/dev/null) && [ "$pid" -gt 1 ] 2>/dev/null && '
            f'tr "\\0" " " < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- {workdir} && '
            f'kill -TERM "$pid" 2>/dev/null; true'
        )

    def engine_exit(self) -> dict[str, Any] | None:
        found = self._read("control/engine-exit.json", 0, 65536)
        if found is None:
            return None
        try:
            marker = json.loads(found[0])
        except ValueError:
            return None  # being written
        return marker if isinstance(marker, dict) else None

    def upload_input(self, source: Path, name: str, sha256: str) -> None:
        folder = self._path("inputs")
        partial, target = f"{folder}/.{name}.partial", f"{folder}/{name}"
        try:
            with self._session().sftp() as sftp:
                _makedirs(sftp, folder)
                sftp.put(str(source), partial)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SFTP upload {name}: {exc or type(exc).__name__}") from None
        status, output = self._session().exec(f"sha256sum {shlex.quote(partial)}")
        if status != 0 or output.split(b" ", 1)[0].decode() != sha256:
            raise TransportError(f"SFTP upload {name}: the pod's copy does not match its sha256")
        self._session().exec(f"mv -f {shlex.quote(partial)} {shlex.quote(target)}")

    def deliver_secrets(self, folder: str, job_id: str, bootstrap: str, data: bytes) -> None:
        """SFTP over the pinned-host-key link (its only gate: lorapod's key): the folder is made 0700 and must be
        in memory, the file is 0600 before a byte is written, and appears whole by a rename."""
        quoted = shlex.quote(folder)
        status, output = self._session().exec(
            f"umask 077 && mkdir -p {quoted} && chmod 700 {quoted} && stat -f -c %T {quoted}"
        )
        kind = output.decode(errors="replace").strip()
        if status != 0:
            raise TransportError(f"SSH: cannot make the secrets folder {folder} ({kind[-200:] or status})")
        if kind not in MEMORY_FILESYSTEMS:
            raise SecretsRefused(f"the pod's secrets folder {folder} is on {kind}, not tmpfs: no secrets were sent")
        target = f"{folder}/{job_id}.json"
        partial = f"{folder}/.{job_id}.{secrets.token_hex(8)}.partial"
        try:
            with self._session().sftp() as sftp:
                with sftp.open(partial, "wb") as remote:
                    remote.chmod(0o600)
                    remote.write(data)
                sftp.posix_rename(partial, target)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SFTP delivery of the secrets: {exc or type(exc).__name__}") from None

    def upload_boot(self, files: dict[str, Path]) -> None:
        folder = self._path("boot")
        try:
            with self._session().sftp() as sftp:
                _makedirs(sftp, folder)
                for name, source in files.items():
                    sftp.put(str(source), f"{folder}/{name}")
                with sftp.open(f"{folder}/ready", "w") as marker:
                    marker.write(b"ready\n")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SFTP upload of the bootstrap: {exc or type(exc).__name__}") from None

    def list_artifacts(self) -> list[dict[str, Any]]:
        folder = self._path("packages")
        try:
            with self._session().sftp() as sftp:
                entries = [e for e in sftp.listdir_attr(folder) if stat.S_ISREG(e.st_mode or 0)]
        except FileNotFoundError:
            return []
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SFTP list: {exc or type(exc).__name__}") from None
        found = []
        for entry in sorted(entries, key=lambda e: e.filename):
            if entry.filename.startswith(".") or entry.filename.endswith((".tmp", ".part", ".partial")):
                continue
            status, output = self._session().exec(f"sha256sum {shlex.quote(folder + '/' + entry.filename)}")
            digest = output.split(b" ", 1)[0].decode() if status == 0 else None
            found.append({"name": entry.filename, "size": entry.st_size, "sha256": digest})
        return found

    def download_artifact(self, name: str, dest_dir: Path, sha256: str | None) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / name
        partial = target.with_name(name + ".partial")
        try:
            with (
                open_download(partial) as local,
                self._session().sftp() as sftp,
                sftp.open(self._path("packages", name), "rb") as remote,
            ):
                remote.seek(local.seek(0, os.SEEK_END))
                remote.prefetch()
                while chunk := remote.read(CHUNK):
                    local.write(chunk)
        except FileNotFoundError:
            raise ArtifactError(f"{name}: not in the pod's packages") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransportError(f"SFTP download {name}: {exc or type(exc).__name__}") from None
        return finish_download(partial, target, sha256)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def _makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
    try:
        sftp.stat(folder)
    except FileNotFoundError:
        sftp.mkdir(folder)

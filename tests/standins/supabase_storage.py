"""A local stand-in for Supabase Storage's HTTP API: the object REST endpoints and TUS resumable uploads.

A real HTTP server on 127.0.0.1 (a thread), speaking the parts of ``/storage/v1`` lorapod uses, with
Supabase's error shape (``{"statusCode", "error", "message"}``):

- ``POST|PUT /object/{bucket}/{key}`` (multipart: ``file``, ``cacheControl``, ``metadata``; ``x-upsert``),
  ``GET /object/{bucket}/{key}``, ``GET /object/info/{bucket}/{key}``;
- ``POST /object/sign/{bucket}/{key}`` → ``{"signedURL"}``, and ``GET`` of that URL without credentials;
- TUS 1.0.0 at ``/upload/resumable``: ``POST`` (Upload-Length, Upload-Metadata with bucketName, objectName,
  contentType, cacheControl, metadata), ``HEAD`` and ``PATCH`` of the upload, in chunks of exactly 6 MB
  (the last one excepted), as Supabase requires.

Every request must carry the service key (``Authorization: Bearer`` and ``apikey``); or, given a
``StorageAccess`` (tests/standins/storage_access.py), a project key in ``apikey`` and any bearer JWT signed with
the project's JWT secret, each object read or written then being decided by the ``storage.objects`` policies
in PostgreSQL as that JWT's role and claims, as Supabase Storage decides it. Objects and uploads
live in files under a folder, so a 300 MB upload never sits in memory. ``cut_at`` makes the server drop the
connection (a TCP reset, no response) once, when an upload reaches that byte, keeping what arrived before
it, as a real server does. ``tamper`` flips a byte of a stored object.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.standins.storage_access import Caller, StorageAccess

CHUNK = 6 * 1024 * 1024
_READ = 1 << 20


@dataclass
class Upload:
    length: int
    metadata: dict[str, str]
    upsert: bool
    part: Path
    caller: Caller | None = None
    offset: int = 0
    bytes_received: int = 0


@dataclass
class Stats:
    creates: int = 0
    patches: int = 0
    cuts: int = 0
    bytes_received: int = 0
    uploads: list[dict[str, Any]] = field(default_factory=list)  # headers and form of each REST upload


class StorageStandIn:
    """Start with ``start()``; ``url`` is the project URL to give the client, ``key`` its service key."""

    def __init__(
        self, root: Path, *, key: str = "service-role-key-for-tests", access: StorageAccess | None = None
    ) -> None:
        self.root = root
        self.key = access.service_key if access else key
        self.access = access
        self.objects = root / "objects"
        self.parts = root / "parts"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.parts.mkdir(parents=True, exist_ok=True)
        self.metadata: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, Upload] = {}
        self.tokens: dict[str, str] = {}
        self.stats = Stats()
        self.cut_at: int | None = None
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="storage-stand-in", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StorageStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def path(self, bucket: str, key: str) -> Path:
        return self.objects / bucket / key

    def tamper(self, bucket: str, key: str) -> None:
        with self.path(bucket, key).open("r+b") as handle:
            first = handle.read(1)
            handle.seek(0)
            handle.write(bytes([first[0] ^ 0xFF]))


def _handler(stand_in: StorageStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(_StorageHandler):
        store = stand_in

    return Handler


class _StorageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: StorageStandIn

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def parse_request(self) -> bool:
        self._consumed = 0  # bytes of this request's body read so far (connections are kept alive)
        return super().parse_request()

    # --- plumbing ---------------------------------------------------------------------------------------

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, error: str, message: str) -> None:
        self._drain()
        self._send(status, {"statusCode": str(status), "error": error, "message": message})

    def _drain(self) -> None:
        remaining = int(self.headers.get("Content-Length") or 0) - self._consumed
        while remaining > 0:
            chunk = self.rfile.read(min(_READ, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
        self._consumed = int(self.headers.get("Content-Length") or 0)

    def _authorized(self) -> bool:
        key, access = self.store.key, self.store.access
        self.caller: Caller | None = None
        if access is not None:
            self.caller = access.identify(self.headers.get("Authorization", ""), self.headers.get("apikey", ""))
            if self.caller is not None:
                return True
        elif self.headers.get("Authorization") == f"Bearer {key}" and self.headers.get("apikey") == key:
            return True
        self._error(400, "Unauthorized", "invalid signature")
        return False

    def _may_write(self, bucket: str, key: str, *, upsert: bool, commit: bool = True) -> bool:
        access = self.store.access
        if (
            access is None
            or self.caller is None
            or access.may_write(self.caller, bucket, key, upsert=upsert, commit=commit)
        ):
            return True
        self._error(403, "Unauthorized", "new row violates row-level security policy")
        return False

    def _may_read(self, bucket: str, key: str) -> bool:
        access = self.store.access
        if access is None or self.caller is None or access.may_read(self.caller, bucket, key):
            return True
        self._error(404, "not_found", "Object not found")  # what RLS hides does not exist for the caller
        return False

    def _route(self) -> tuple[str, list[str], dict[str, list[str]]]:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        prefix = "/storage/v1/"
        if not path.startswith(prefix):
            return "", [], {}
        return path[len(prefix) :], path[len(prefix) :].split("/"), parse_qs(parts.query)

    # --- REST -------------------------------------------------------------------------------------------

    def do_POST(self) -> None:
        rest, segments, _ = self._route()
        if rest == "upload/resumable":
            if self._authorized():
                self._tus_create()
        elif segments[:2] == ["object", "sign"]:
            if self._authorized() and self._may_read(segments[2], "/".join(segments[3:])):
                self._sign(segments[2], "/".join(segments[3:]))
        elif segments[:1] == ["object"] and len(segments) >= 3:
            if self._authorized():
                self._put_object(segments[1], "/".join(segments[2:]), update=False)
        else:
            self._error(404, "not_found", "no such route")

    def do_PUT(self) -> None:
        _, segments, _ = self._route()
        if segments[:1] == ["object"] and len(segments) >= 3 and self._authorized():
            self._put_object(segments[1], "/".join(segments[2:]), update=True)

    def do_GET(self) -> None:
        _, segments, query = self._route()
        if segments[:2] == ["object", "sign"]:
            bucket, key = segments[2], "/".join(segments[3:])
            token = (query.get("token") or [""])[0]
            if self.store.tokens.get(token) != f"{bucket}/{key}":
                self._error(400, "InvalidSignature", "invalid signature")
                return
            self._stream(bucket, key)
        elif segments[:2] == ["object", "info"]:
            bucket, key = segments[2], "/".join(segments[3:])
            if self._authorized() and self._may_read(bucket, key):
                info = self.store.metadata.get(f"{bucket}/{key}")
                if info is None:
                    self._error(404, "not_found", "Object not found")
                else:
                    self._send(200, info)
        elif segments[:1] == ["object"] and len(segments) >= 3:
            if self._authorized() and self._may_read(segments[1], "/".join(segments[2:])):
                self._stream(segments[1], "/".join(segments[2:]))
        else:
            self._error(404, "not_found", "no such route")

    def _put_object(self, bucket: str, key: str, *, update: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self._consumed = length
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + self.headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body
        )
        form: dict[str, Any] = {}
        file_type, content = None, b""
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                file_type, content = part.get_content_type(), part.get_payload(decode=True) or b""
            else:
                form[str(name)] = (part.get_payload(decode=True) or b"").decode()
        upsert = self.headers.get("x-upsert")
        self.store.stats.uploads.append(
            {"x-upsert": upsert, "file-content-type": file_type, "form": form, "method": self.command}
        )
        target = self.store.path(bucket, key)
        if target.exists() and not update and upsert != "true":
            self._error(400, "Duplicate", "The resource already exists")
            return
        if not self._may_write(bucket, key, upsert=update or upsert == "true"):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        user = json.loads(form["metadata"]) if form.get("metadata") else {}
        self._record(bucket, key, len(content), file_type or "text/plain", user)
        self._send(200, {"Key": f"{bucket}/{key}", "Id": str(uuid.uuid4())})

    def _record(self, bucket: str, key: str, size: int, kind: str, user: dict[str, Any]) -> None:
        self.store.metadata[f"{bucket}/{key}"] = {
            "name": key, "bucket_id": bucket, "size": size, "content_type": kind, "metadata": user,
        }  # fmt: skip

    def _stream(self, bucket: str, key: str) -> None:
        target = self.store.path(bucket, key)
        if not target.is_file():
            self._error(404, "not_found", "Object not found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(target.stat().st_size))
        self.end_headers()
        with target.open("rb") as handle:
            while chunk := handle.read(_READ):
                self.wfile.write(chunk)

    def _sign(self, bucket: str, key: str) -> None:
        self._drain()
        if not self.store.path(bucket, key).is_file():
            self._error(404, "not_found", "Object not found")
            return
        token = secrets.token_urlsafe(24)
        self.store.tokens[token] = f"{bucket}/{key}"
        self._send(200, {"signedURL": f"/object/sign/{bucket}/{key}?token={token}"})

    # --- TUS --------------------------------------------------------------------------------------------

    def _tus_create(self) -> None:
        self._drain()
        if self.headers.get("Tus-Resumable") != "1.0.0":
            self._send(412, None, {"Tus-Version": "1.0.0"})
            return
        metadata = {}
        for pair in (self.headers.get("Upload-Metadata") or "").split(","):
            if pair.strip():
                name, _, value = pair.strip().partition(" ")
                metadata[name] = base64.b64decode(value).decode()
        if not {"bucketName", "objectName"} <= metadata.keys():
            self._error(400, "InvalidRequest", "bucketName and objectName are required")
            return
        upsert = self.headers.get("x-upsert") == "true"
        # Storage checks the write before it takes a byte (the row itself is inserted when the upload ends).
        if not self._may_write(metadata["bucketName"], metadata["objectName"], upsert=upsert, commit=False):
            return
        upload_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        upload = Upload(
            length=int(self.headers["Upload-Length"]),
            metadata=metadata,
            upsert=upsert,
            part=self.store.parts / upload_id,
            caller=self.caller,
        )
        upload.part.write_bytes(b"")
        self.store.uploads[upload_id] = upload
        self.store.stats.creates += 1
        host, port = self.server.server_address[:2]
        location = f"http://{host!s}:{port}/storage/v1/upload/resumable/{upload_id}"
        self._send(201, None, {"Location": location, "Tus-Resumable": "1.0.0"})

    def do_HEAD(self) -> None:
        _, segments, _ = self._route()
        upload = self.store.uploads.get(segments[-1]) if segments[:2] == ["upload", "resumable"] else None
        if not self._authorized():
            return
        if upload is None:
            self._send(404, None)
            return
        headers = {"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length)}
        self._send(200, None, {**headers, "Cache-Control": "no-store", "Tus-Resumable": "1.0.0"})

    def do_PATCH(self) -> None:
        _, segments, _ = self._route()
        if not self._authorized():
            return
        upload = self.store.uploads.get(segments[-1]) if segments[:2] == ["upload", "resumable"] else None
        problem = self._patch_problem(upload)
        if problem is not None:
            self._error(*problem)
            return
        assert upload is not None
        if not self._receive(upload, int(self.headers.get("Content-Length") or 0)):
            return  # the connection was dropped
        self.store.stats.patches += 1
        if upload.offset == upload.length:
            self._finish(upload)
        self._send(204, None, {"Upload-Offset": str(upload.offset), "Tus-Resumable": "1.0.0"})

    def _patch_problem(self, upload: Upload | None) -> tuple[int, str, str] | None:
        if upload is None:
            return 404, "not_found", "Upload not found"
        if self.headers.get("Content-Type") != "application/offset+octet-stream":
            return 415, "InvalidRequest", "Content-Type must be application/offset+octet-stream"
        offset, length = int(self.headers.get("Upload-Offset", -1)), int(self.headers.get("Content-Length") or 0)
        if offset != upload.offset:
            return 409, "Conflict", f"Upload-Offset {offset} does not match {upload.offset}"
        if length != CHUNK and offset + length != upload.length:
            return 400, "InvalidRequest", "chunks must be 6MB, the last one excepted"
        return None

    def _receive(self, upload: Upload, length: int) -> bool:
        """Append the body to the upload's part file; False when the connection was cut on purpose."""
        cut = self.store.cut_at
        with upload.part.open("ab") as part:
            remaining = length
            while remaining > 0:
                want = min(_READ, remaining)
                if cut is not None and upload.offset < cut <= upload.offset + want:
                    want = cut - upload.offset
                data = self.rfile.read(want)
                part.write(data)
                part.flush()
                upload.offset += len(data)
                upload.bytes_received += len(data)
                self.store.stats.bytes_received += len(data)
                remaining -= len(data)
                self._consumed += len(data)
                if cut is not None and upload.offset == cut:
                    self.store.cut_at = None
                    self.store.stats.cuts += 1
                    self._reset()
                    return False
                if not data:
                    return False
        return True

    def _finish(self, upload: Upload) -> None:
        bucket, key = upload.metadata["bucketName"], upload.metadata["objectName"]
        if self.store.access is not None and upload.caller is not None:
            self.store.access.may_write(upload.caller, bucket, key, upsert=True)
        target = self.store.path(bucket, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        upload.part.replace(target)
        user = json.loads(upload.metadata["metadata"]) if upload.metadata.get("metadata") else {}
        self._record(bucket, key, upload.length, upload.metadata.get("contentType", "text/plain"), user)

    def _reset(self) -> None:
        """Drop the connection as a network failure does: a TCP reset, no response."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the connection was reset on purpose
            super().finish()

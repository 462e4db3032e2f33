"""Local receivers of notices: a Slack-compatible incoming webhook and an SMTP server (aiosmtpd), on 127.0.0.1.

``WebhookReceiver`` answers each POST with the next code of ``answers`` (then 200) and records every request
with the time it arrived; an error answer echoes the request's path, as some services do, so tests can check
that lorapod redacts it. ``MailServer`` accepts mail in plain text, with STARTTLS or over TLS, optionally
requiring a login, and records each message with the time it arrived. ``make_certificate`` writes a
self-signed certificate for 127.0.0.1 (trust it with ``SSL_CERT_FILE``).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

TOKEN = "T0A1B2C3/B4D5E6F7/hooktoken9f3a1c7e5b2d4a60"


@dataclass
class Posted:
    received: float  # time.perf_counter() when it arrived
    path: str
    payload: dict[str, Any]


class WebhookReceiver:
    def __init__(self) -> None:
        self.answers: list[int] = []
        self.posts: list[Posted] = []
        self.tries = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.tries += 1
                    code = receiver.answers.pop(0) if receiver.answers else 200
                    if code == 200:
                        receiver.posts.append(Posted(time.perf_counter(), self.path, json.loads(body)))
                answer = b"ok" if code == 200 else f"no_service for {self.path}".encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Posted]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Mail:
    received: float  # time.perf_counter() when it arrived
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    authenticated: bool


class MailServer:
    """An SMTP server on 127.0.0.1: ``security`` plain, starttls (required) or ssl; ``login`` (user, password)
    makes it require that login."""

    def __init__(
        self,
        *,
        security: str = "plain",
        login: tuple[str, str] | None = None,
        certificate: tuple[Path, Path] | None = None,
        echo_failed_login: bool = False,
    ) -> None:
        self.mails: list[Mail] = []
        self.login = login
        self.echo_failed_login = echo_failed_login
        server = self

        class Handler:
            async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
                message = message_from_bytes(envelope.original_content)
                server.mails.append(
                    Mail(
                        received=time.perf_counter(),
                        mail_from=envelope.mail_from,
                        rcpt_tos=list(envelope.rcpt_tos),
                        message=message,
                        authenticated=session.authenticated,
                    )
                )
                return "250 OK"

        tls: ssl.SSLContext | None = None
        if certificate is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(*certificate)
        options: dict[str, Any] = {"authenticator": self._authenticate} if login else {}
        if security == "starttls":
            options.update(tls_context=tls, require_starttls=True)
        else:
            options.update(auth_require_tls=False)
        self.port = _free_port()
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, ssl_context=tls if security == "ssl" else None, **options
        )
        self.controller.start()

    def _authenticate(self, _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> AuthResult:
        assert self.login is not None and isinstance(data, LoginPassword)
        if (data.login.decode(), data.password.decode()) == self.login:
            return AuthResult(success=True)
        if self.echo_failed_login:  # a careless server that repeats what it was sent
            return AuthResult(success=False, handled=False, message=f"535 bad password {data.password.decode()}")
        return AuthResult(success=False, handled=False)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while len(self.mails) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return list(self.mails)

    def close(self) -> None:
        self.controller.stop()


def _free_port() -> int:
    # aiosmtpd's Controller checks its port by connecting to it, so it needs the number up front.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lorapod test SMTP")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file

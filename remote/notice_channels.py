"""The channels notices go out on: a Slack-compatible webhook, e-mail over SMTP, and the desktop (notify-send).

Each channel's ``send`` either delivers or raises ``ChannelError``, whose message is safe to log and store:
the secrets it knows (the webhook URL, whose path is a token; the SMTP password) are redacted from it. The
webhook URL also never reaches httpx's own request log: a filter on the ``httpx`` logger redacts it.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, ClassVar, Protocol
from urllib.parse import quote, urlsplit

import httpx

from engine import LorapodError
from store.models import NoticeDelivery
from store.settings import Settings

REDACTED = "<redacted>"
TIMEOUT_S = 10.0
SMTP_PORTS = {"starttls": 587, "ssl": 465, "plain": 25}
URGENT = frozenset({"failed", "interrupted", "limit", "budget"})
# A webhook path segment this long is taken for a token even where the whole URL appears reformatted.
TOKEN_LENGTH = 16

log = logging.getLogger(__name__)


class ChannelError(LorapodError):
    """A delivery that failed; the message names the channel and why, with no secret in it."""


class Redactor:
    """Replaces each known secret (and its common encodings) in a text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        for secret in secrets:
            if secret and len(secret) >= 4:
                self._secrets |= {secret, quote(secret, safe=""), quote(secret, safe="/")}

    def __call__(self, text: object) -> str:
        result = str(text)
        for secret in sorted(self._secrets, key=len, reverse=True):  # longest first: a URL before its path
            result = result.replace(secret, REDACTED)
        return result


class _RedactHttpxLog(logging.Filter):
    """httpx logs each request's full URL at INFO; for the notice webhook that URL is a credential."""

    redact = Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_HTTPX_FILTER = _RedactHttpxLog()
logging.getLogger("httpx").addFilter(_HTTPX_FILTER)


def tls_context() -> ssl.SSLContext:
    """The trust lorapod's HTTP clients use (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR), made once."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _tls_context(_cafile: str | None, _capath: str | None) -> ssl.SSLContext:
    # Loading a CA bundle takes about 20 ms, most of a notice's latency if done for each; the arguments
    # only key the cache, so a changed SSL_CERT_FILE is honoured.
    return httpx.create_ssl_context()


class Channel(Protocol):
    name: ClassVar[str]

    def send(self, delivery: NoticeDelivery) -> None: ...


def url_secrets(url: str) -> list[str]:
    """The parts of a webhook URL that may carry its token: all of it, path, query, password, long segments."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") + parts.query.split("&") if len(s) >= TOKEN_LENGTH]
    return [url, parts.path if len(parts.path) > 1 else "", parts.query, parts.password or "", *segments]


class WebhookChannel:
    """POSTs ``{"text": …}`` (and ``blocks`` when the notice has them) to a Slack-compatible incoming webhook."""

    name: ClassVar[str] = "webhook"

    def __init__(self, url: str, *, timeout: float = TIMEOUT_S) -> None:
        self._url = url
        self.host = urlsplit(url).hostname or "?"  # the only part of the URL a message may show
        self.redact = Redactor(url_secrets(url))
        _HTTPX_FILTER.redact.add(*url_secrets(url))
        self._client = httpx.Client(timeout=timeout, follow_redirects=False, verify=tls_context())

    def __repr__(self) -> str:
        return f"WebhookChannel(host={self.host!r})"

    def send(self, delivery: NoticeDelivery) -> None:
        payload: dict[str, Any] = {"text": f"*{delivery.title}*\n{delivery.body}"}
        if delivery.blocks:
            payload["blocks"] = delivery.blocks
        try:
            response = self._client.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            reason = self.redact(exc) or type(exc).__name__
            raise ChannelError(f"the webhook at {self.host} could not be reached: {reason}") from None
        if response.status_code >= 300:
            answer = self.redact(response.text.strip()[:200])
            raise ChannelError(
                f"the webhook at {self.host} answered HTTP {response.status_code}" + (f": {answer}" if answer else "")
            )

    def close(self) -> None:
        self._client.close()


class EmailChannel:
    """Sends a plain-text e-mail over SMTP: STARTTLS, implicit TLS (ssl) or plain, logging in when a user is set."""

    name: ClassVar[str] = "email"

    def __init__(
        self,
        host: str,
        recipients: list[str],
        *,
        port: int | None = None,
        security: str = "starttls",
        user: str | None = None,
        password: str | None = None,
        sender: str | None = None,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.host, self.recipients, self.security = host, recipients, security
        self.port = port or SMTP_PORTS[security]
        self.user = user
        self._password = password
        self.sender = sender or (user if user and "@" in user else f"lorapod@{socket.gethostname()}")
        self.timeout = timeout
        # AUTH PLAIN and LOGIN send the password base64-encoded: a server that echoes them must not leak it.
        encoded = [
            base64.b64encode(f"\0{user or ''}\0{password}".encode()).decode(),
            base64.b64encode(password.encode()).decode(),
        ] if password else []  # fmt: skip
        self.redact = Redactor([password, *encoded])

    def __repr__(self) -> str:
        return f"EmailChannel(host={self.host!r}, port={self.port}, security={self.security!r})"

    def message(self, delivery: NoticeDelivery) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = delivery.title
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message["X-Lorapod-Notice"] = f"{delivery.kind} {delivery.key}"
        message.set_content(delivery.body + "\n")
        return message

    def send(self, delivery: NoticeDelivery) -> None:
        where = f"the SMTP server {self.host}:{self.port}"
        try:
            with self._connect() as smtp:
                if self.user:
                    smtp.login(self.user, self._password or "")
                smtp.send_message(self.message(delivery))
        except smtplib.SMTPAuthenticationError as exc:
            raise ChannelError(f"{where} refused the login of {self.user}: {self._reason(exc)}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise ChannelError(f"{where} refused the recipients {', '.join(exc.recipients)}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ChannelError(f"{where}: {self._reason(exc)} (check notify_smtp_security)") from None
        except (smtplib.SMTPException, OSError) as exc:  # OSError: refused, unreachable, timeouts, TLS errors
            raise ChannelError(f"{where}: {self._reason(exc)}") from None

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=tls_context())
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.starttls(context=tls_context())
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, smtplib.SMTPResponseException):
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            return self.redact(f"{exc.smtp_code} {text}")
        return self.redact(exc) or type(exc).__name__


class DesktopChannel:
    """A desktop notification through ``notify-send`` (libnotify)."""

    name: ClassVar[str] = "desktop"

    def __init__(self, program: str, *, timeout: float = TIMEOUT_S) -> None:
        self.program, self.timeout = program, timeout

    def __repr__(self) -> str:
        return f"DesktopChannel({self.program!r})"

    def send(self, delivery: NoticeDelivery) -> None:
        urgency = "critical" if delivery.kind in URGENT else "normal"
        command = [self.program, "--app-name=lorapod", f"--urgency={urgency}", "--", delivery.title, delivery.body]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ChannelError(f"notify-send could not run: {exc}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise ChannelError(f"notify-send exited {done.returncode}" + (f": {said[-1][:200]}" if said else ""))


def configured_channels(settings: Settings) -> dict[str, Channel]:
    """The channels the settings turn on; the desktop only where notify-send is on PATH."""
    channels: dict[str, Channel] = {}
    if settings.notify_webhook_url is not None:
        channels["webhook"] = WebhookChannel(settings.notify_webhook_url.get_secret_value())
    if settings.notify_smtp_host and settings.notify_email_to:
        password = settings.notify_smtp_password
        channels["email"] = EmailChannel(
            settings.notify_smtp_host,
            list(settings.notify_email_to),
            port=settings.notify_smtp_port,
            security=settings.notify_smtp_security,
            user=settings.notify_smtp_user,
            password=password.get_secret_value() if password is not None else None,
            sender=settings.notify_email_from,
        )
    if settings.notify_desktop:
        program = shutil.which("notify-send")
        if program is not None:
            channels["desktop"] = DesktopChannel(program)
        else:
            log.debug("notify_desktop is on but notify-send is not on PATH; no desktop notices")
    return channels


def channel_names(settings: Settings) -> list[str]:
    """The names of the channels ``configured_channels`` would build, without building them."""
    names = []
    if settings.notify_webhook_url is not None:
        names.append("webhook")
    if settings.notify_smtp_host and settings.notify_email_to:
        names.append("email")
    elif settings.notify_smtp_host or settings.notify_email_to:
        _half_configured_email()
    if settings.notify_desktop and shutil.which("notify-send") is not None:
        names.append("desktop")
    return names


@functools.cache
def _half_configured_email() -> None:
    log.warning("e-mail notices need both notify_smtp_host and notify_email_to; none are sent")


def close_channels(channels: dict[str, Channel]) -> None:
    for channel in channels.values():
        if isinstance(channel, WebhookChannel):
            channel.close()

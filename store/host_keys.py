"""Pinned SSH host keys: the key a host and port showed first, kept so a different one later is refused."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select

from store.db import Ledger
from store.models import HostKey, utcnow


@dataclass(frozen=True)
class Pin:
    host: str
    port: int
    key_type: str
    key_base64: str
    fingerprint_sha256: str


def pinned_key(ledger: Ledger, host: str, port: int) -> Pin | None:
    """The key pinned for ``host:port``, if any."""
    statement = select(HostKey).where(col(HostKey.host) == host, col(HostKey.port) == port)
    with ledger.read() as session:
        row = session.exec(statement).first()
    if row is None:
        return None
    return Pin(row.host, row.port, row.key_type, row.key_base64, row.fingerprint_sha256)


def pin_key(ledger: Ledger, pin: Pin) -> Pin:
    """Pin ``pin`` unless the host and port already have a key; returns the key that is pinned now."""
    with ledger.write() as session:
        row = session.exec(select(HostKey).where(col(HostKey.host) == pin.host, col(HostKey.port) == pin.port)).first()
        if row is not None:
            return Pin(row.host, row.port, row.key_type, row.key_base64, row.fingerprint_sha256)
        session.add(
            HostKey(
                host=pin.host,
                port=pin.port,
                key_type=pin.key_type,
                key_base64=pin.key_base64,
                fingerprint_sha256=pin.fingerprint_sha256,
                pinned_at=utcnow(),
            )
        )
    return pin


def forget_key(ledger: Ledger, host: str, port: int) -> bool:
    """Drop the pin of ``host:port`` (a new pod was just given that address); True when there was one."""
    with ledger.write() as session:
        row = session.exec(select(HostKey).where(col(HostKey.host) == host, col(HostKey.port) == port)).first()
        if row is None:
            return False
        session.delete(row)
    return True


class HostKeyStore:
    """The ledger's pinned host keys, as the SSH transport asks for them."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def get(self, host: str, port: int) -> Pin | None:
        return pinned_key(self.ledger, host, port)

    def pin(self, pin: Pin) -> Pin:
        return pin_key(self.ledger, pin)

    def forget(self, host: str, port: int) -> bool:
        return forget_key(self.ledger, host, port)

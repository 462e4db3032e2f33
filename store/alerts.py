"""Alerts: things to show the user once — a budget threshold crossed, a job stopped by a limit or lost."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select

from store.db import Ledger
from store.models import Alert, utcnow


def raise_alert(
    ledger: Ledger, key: str, kind: str, message: str, *, job_id: uuid.UUID | None = None, level: str = "warning"
) -> bool:
    """Record an alert unless one with the same ``key`` exists; True when it is new."""
    statement = (
        sqlite_insert(Alert.__table__)  # type: ignore[attr-defined]
        .values(key=key, kind=kind, level=level, message=message, job_id=job_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key"])
    )
    with ledger.write() as session:
        result = session.connection().execute(statement)
    return result.rowcount == 1


def get_alert(ledger: Ledger, key: str) -> Alert | None:
    with ledger.read() as session:
        return session.exec(select(Alert).where(Alert.key == key)).first()


def list_alerts(ledger: Ledger, *, unacknowledged: bool = True, limit: int = 50) -> list[Alert]:
    """Newest first."""
    statement = select(Alert).order_by(col(Alert.created_at).desc(), col(Alert.id).desc()).limit(limit)
    if unacknowledged:
        statement = statement.where(col(Alert.acknowledged_at).is_(None))
    with ledger.read() as session:
        return list(session.exec(statement).all())


def acknowledge(ledger: Ledger, alert_ids: list[int]) -> None:
    with ledger.write() as session:
        for alert in session.exec(select(Alert).where(col(Alert.id).in_(alert_ids))).all():
            alert.acknowledged_at = utcnow()
            session.add(alert)

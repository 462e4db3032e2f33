"""Messages workers and followers post to screens (attributes down, messages up)."""

from __future__ import annotations

from textual.message import Message


class JobChanged(Message, bubble=False):
    """A followed job moved on (new events ingested, or a new status); replaceable, so bursts never flood."""

    def __init__(self, job_id: str, status: str, step: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.status = status
        self.step = step

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobChanged) and message.job_id == self.job_id


class JobFinished(Message, bubble=False):
    """A followed job reached a terminal status."""

    def __init__(self, job_id: str, status: str, label: str, reason: str = "") -> None:
        super().__init__()
        self.job_id = job_id
        self.status = status
        self.label = label
        self.reason = reason  # why it ended, with the failure's code ("out_of_memory: …"); "" when completed


class JobStarted(Message):
    """A job was started from the dashboard: follow it."""

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id


class LedgerSynced(Message, bubble=False):
    """A background sync with Supabase finished (or failed): the summary bar, and rows it brought, change."""

    def __init__(self, received: int) -> None:
        super().__init__()
        self.received = received


class ReplyGrew(Message, bubble=False):
    """One side's playground reply so far, a piece longer than before (each piece is shown: they are few)."""

    def __init__(self, side: str, text: str) -> None:
        super().__init__()
        self.side = side
        self.text = text


class ReplyDone(Message, bubble=False):
    """Both replies to a prompt have come (``error``: why they stopped short)."""

    def __init__(self, summary: str, error: str = "") -> None:
        super().__init__()
        self.summary = summary
        self.error = error

"""The job status machine — the one place that says which status may follow which.

::

    queued → provisioning → preprocessing → model_loading → training → evaluating → uploading → completed
       │            └───────────────┴──────────────┴────────────┴────────────┴───────────┴─→ interrupted
       └─→ failed / cancelled (from any live status, interrupted included)          interrupted → provisioning

A job moves forward along the pipeline; a stage it passes unobserved (a job followed after the fact, an
evaluation that is switched off) may be skipped, but ``completed`` is reachable only from training or
later. A process or pod lost mid-job makes it ``interrupted``; resuming sends it back to provisioning.
Terminal statuses never change again.
"""

from __future__ import annotations

from enum import StrEnum

from store.errors import IllegalTransition


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROVISIONING = "provisioning"
    PREPROCESSING = "preprocessing"
    MODEL_LOADING = "model_loading"
    TRAINING = "training"
    EVALUATING = "evaluating"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


S = JobStatus
PIPELINE: tuple[JobStatus, ...] = (
    S.QUEUED, S.PROVISIONING, S.PREPROCESSING, S.MODEL_LOADING, S.TRAINING, S.EVALUATING, S.UPLOADING,
    S.COMPLETED,
)  # fmt: skip
TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
LIVE = frozenset(set(JobStatus) - TERMINAL)
RUNNING = frozenset(LIVE - {S.QUEUED, S.INTERRUPTED})
_COMPLETABLE_FROM = frozenset({S.TRAINING, S.EVALUATING, S.UPLOADING})

# Filters offered to users: each maps to the statuses it shows.
GROUPS: dict[str, frozenset[JobStatus]] = {
    "all": frozenset(JobStatus),
    "active": LIVE,
    "completed": frozenset({S.COMPLETED}),
    "failed": frozenset({S.FAILED, S.INTERRUPTED}),
    "cancelled": frozenset({S.CANCELLED}),
    "interrupted": frozenset({S.INTERRUPTED}),
}


def allowed_next(current: JobStatus) -> frozenset[JobStatus]:
    """Every status a job in ``current`` may move to (itself excluded)."""
    if current in TERMINAL:
        return frozenset()
    if current is S.INTERRUPTED:
        return frozenset({S.PROVISIONING, S.FAILED, S.CANCELLED})
    later = set(PIPELINE[PIPELINE.index(current) + 1 :])
    if current not in _COMPLETABLE_FROM:
        later.discard(S.COMPLETED)
    nexts = later | {S.FAILED, S.CANCELLED}
    if current is not S.QUEUED:
        nexts.add(S.INTERRUPTED)
    return frozenset(nexts)


def check_transition(current: str, new: str, job: str = "job") -> JobStatus:
    """The new status when ``current → new`` is allowed (a repeat of the same status is); else raise."""
    try:
        old_status, new_status = JobStatus(current), JobStatus(new)
    except ValueError:
        raise IllegalTransition(f"{job}: unknown status {new!r} (or {current!r})") from None
    if new_status is old_status:
        return new_status
    if old_status in TERMINAL:
        raise IllegalTransition(f"{job} is {old_status} — a finished job never changes status (asked: {new})")
    if new_status not in allowed_next(old_status):
        allowed = ", ".join(sorted(allowed_next(old_status)))
        raise IllegalTransition(f"{job}: cannot go from {old_status} to {new_status} (allowed: {allowed})")
    return new_status

"""Jobs in the ledger: create, find by id or prefix, list with filters, sort and paging, change status."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import col, select

from engine.config import JobSpec
from store.db import Ledger
from store.errors import AmbiguousJobId, JobNotFound
from store.models import TrainingFile, TrainingJob, utcnow
from store.status import GROUPS, TERMINAL, JobStatus, check_transition

SortKey = Literal[
    "created_at", "started_at", "name", "status", "stage", "base_model", "progress", "duration", "cost",
    "training_file",
]  # fmt: skip
SORT_KEYS: tuple[str, ...] = SortKey.__args__  # type: ignore[attr-defined]

# Fields a status change or progress update may set; anything else is refused.
_UPDATABLE = frozenset(
    {
        "stage", "pod_id", "current_step", "total_steps", "current_epoch", "started_at", "completed_at",
        "estimated_completion_at", "estimated_cost_usd", "actual_cost_usd", "gpu_hours", "lora_artifact_path",
        "error_message", "error_category", "error_hint", "gpu_type", "workdir", "last_event_seq",
    }
)  # fmt: skip


# Parts of a JobSpec kept in their own (seed) columns; the ``spec`` column holds the rest, once.
_SPEC_IN_COLUMNS = {"job_id", "name", "preset", "base_model", "hyperparameters", "resources"}


def job_spec(job: TrainingJob) -> JobSpec:
    """The complete JobSpec a job runs, from its columns."""
    return JobSpec.model_validate(
        {
            **job.spec,
            "job_id": str(job.id),
            "name": job.name,
            "preset": job.preset,
            "base_model": job.base_model,
            "hyperparameters": job.hyperparameters,
            "resources": job.resources,
        }
    )


def short_id(job_id: uuid.UUID | str) -> str:
    """The 8-character form shown to users; any unique prefix finds the job again."""
    return uuid.UUID(str(job_id)).hex[:8]


def create_job(
    ledger: Ledger,
    spec: JobSpec,
    *,
    name: str | None = None,
    training_file_id: uuid.UUID | None = None,
    estimated_cost_usd: float | None = None,
    parent_job_id: uuid.UUID | None = None,
    created_by: str | None = None,
) -> TrainingJob:
    """A new queued job; the spec's job_id is filled in with the new id."""
    job_id = uuid.UUID(spec.job_id) if spec.job_id else uuid.uuid4()
    spec = spec.model_copy(update={"job_id": str(job_id), "name": name or spec.name})
    retry_count = 0
    with ledger.write() as session:
        if parent_job_id is not None:
            parent = session.get(TrainingJob, parent_job_id)
            if parent is None:
                raise JobNotFound(f"parent job {parent_job_id} is not in the ledger")
            retry_count = parent.retry_count + 1
        job = TrainingJob(
            id=job_id,
            name=spec.name,
            training_file_id=training_file_id,
            status=JobStatus.QUEUED,
            base_model=spec.base_model,
            preset=spec.preset,
            hyperparameters=spec.hyperparameters.model_dump(mode="json"),
            resources=spec.resources.model_dump(mode="json"),
            spec=spec.model_dump(mode="json", exclude=_SPEC_IN_COLUMNS),
            provider=spec.resources.provider.value,
            estimated_cost_usd=estimated_cost_usd,
            parent_job_id=parent_job_id,
            retry_count=retry_count,
            created_by=created_by,
        )
        session.add(job)
    return job


def get_job(ledger: Ledger, job_id: uuid.UUID | str) -> TrainingJob:
    """A job by full id or any unique prefix of its hex form (dashes optional)."""
    with ledger.read() as session:
        return _find(session, job_id)


def _find(session: Any, job_id: uuid.UUID | str) -> TrainingJob:
    text = str(job_id).strip().lower().replace("-", "")
    if not text or any(c not in "0123456789abcdef" for c in text):
        raise JobNotFound(f"{job_id!r} is not a job id (expected hex digits, e.g. 3f2a9c1d)")
    if len(text) == 32:
        job = session.get(TrainingJob, uuid.UUID(text))
        if job is None:
            raise JobNotFound(f"no job {job_id} in the ledger")
        return job
    matches = session.exec(select(TrainingJob).where(_id_text().like(f"{text}%")).limit(6)).all()
    if not matches:
        raise JobNotFound(f"no job id starts with {job_id!r}")
    if len(matches) > 1:
        ids = ", ".join(short_id(m.id) for m in matches[:5])
        raise AmbiguousJobId(f"{job_id!r} matches several jobs ({ids}…); give more characters")
    return matches[0]


def _id_text() -> Any:
    """The id column as its stored 32-hex-digit text, for prefix matching."""
    return sa.type_coerce(col(TrainingJob.id), sa.String)


@dataclass(frozen=True)
class JobQuery:
    """What ``list_jobs`` returns: filters, then one sort, then a page."""

    group: str = "all"  # all / active / completed / failed / cancelled (store.status.GROUPS)
    statuses: frozenset[str] | None = None  # exact statuses; overrides group
    search: str | None = None  # id prefix, name, base model or preset, case-insensitive
    training_file_id: uuid.UUID | None = None
    base_model: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    sort: str = "created_at"
    descending: bool = True
    limit: int | None = 100
    offset: int = 0

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown status filter {self.group!r}; choose one of: {', '.join(GROUPS)}")
        if self.sort not in SORT_KEYS:
            raise ValueError(f"cannot sort by {self.sort!r}; choose one of: {', '.join(SORT_KEYS)}")


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as lists and tables show it: no spec or JSON columns, so 10,000 of them load quickly."""

    id: uuid.UUID
    name: str | None
    status: str
    stage: str | None
    base_model: str
    preset: str | None
    provider: str
    training_file_id: uuid.UUID | None
    training_file_name: str | None
    current_step: int
    total_steps: int | None
    current_epoch: float
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    estimated_cost_usd: float | None
    actual_cost_usd: float
    gpu_hours: float
    error_category: str | None
    parent_job_id: uuid.UUID | None
    updated_at: datetime  # for an interrupted job: about when it stopped (nothing runs to move it on)

    @property
    def short_id(self) -> str:
        return self.id.hex[:8]


_ROW_COLUMNS = [
    col(getattr(TrainingJob, name)) if name != "training_file_name" else col(TrainingFile.name)
    for name in JobRow.__dataclass_fields__
]


@dataclass
class JobPage:
    jobs: list[JobRow]
    total: int  # matching jobs across all pages
    query: JobQuery = field(default_factory=JobQuery)


def _sort_column(key: str) -> Any:
    job = TrainingJob
    if key == "progress":
        return sa.case((col(job.total_steps) > 0, col(job.current_step) * 1.0 / col(job.total_steps)), else_=0.0)
    if key == "duration":
        end = sa.func.coalesce(col(job.completed_at), sa.func.datetime("now"))
        return sa.func.julianday(end) - sa.func.julianday(col(job.started_at))
    if key == "cost":
        return col(job.actual_cost_usd)
    if key == "training_file":
        return col(TrainingFile.name)
    return getattr(job, key)


def _where(query: JobQuery) -> list[Any]:
    job = TrainingJob
    clauses: list[Any] = []
    statuses = query.statuses if query.statuses is not None else GROUPS[query.group]
    if set(statuses) != set(JobStatus):
        clauses.append(col(job.status).in_(sorted(str(s) for s in statuses)))
    if query.training_file_id is not None:
        clauses.append(col(job.training_file_id) == query.training_file_id)
    if query.base_model:
        clauses.append(col(job.base_model) == query.base_model)
    if query.created_from is not None:
        clauses.append(col(job.created_at) >= query.created_from)
    if query.created_to is not None:
        clauses.append(col(job.created_at) < query.created_to)
    if query.search:
        # SQLite's LIKE ignores ASCII case on its own; no lower() keeps the scan cheap.
        needle = query.search.strip().replace("\\", "").replace("%", "").replace("_", "\\_")
        pattern = f"%{needle}%"
        clauses.append(
            sa.or_(
                _id_text().like(f"{needle.lower().replace('-', '')}%"),
                col(job.name).like(pattern, escape="\\"),
                col(job.base_model).like(pattern, escape="\\"),
                col(job.preset).like(pattern, escape="\\"),
            )
        )
    return clauses


def list_jobs(ledger: Ledger, query: JobQuery | None = None) -> JobPage:
    """One page of jobs matching ``query``, and how many match in all."""
    query = query or JobQuery()
    clauses = _where(query)
    order = _sort_column(query.sort)
    order_by = [order.desc() if query.descending else order.asc(), col(TrainingJob.created_at).desc()]
    statement = (
        sa.select(*_ROW_COLUMNS)
        .select_from(TrainingJob)
        .outerjoin(TrainingFile, col(TrainingJob.training_file_id) == col(TrainingFile.id))
        .where(*clauses)
        .order_by(*order_by)
        .offset(query.offset)
    )
    if query.limit is not None:
        statement = statement.limit(query.limit)
    count = sa.select(sa.func.count()).select_from(TrainingJob).where(*clauses)
    with ledger.read() as session:
        connection = session.connection()
        jobs = [JobRow(*row) for row in connection.execute(statement)]
        total = connection.execute(count).scalar_one()
    return JobPage(jobs=jobs, total=int(total), query=query)


def transition(ledger: Ledger, job_id: uuid.UUID | str, status: JobStatus | str, **fields: Any) -> TrainingJob:
    """Move a job to ``status`` (IllegalTransition when the status machine forbids it), setting ``fields``.

    The first running status stamps ``started_at``; a terminal one stamps ``completed_at``.
    """
    _check_fields(fields)
    with ledger.write() as session:
        job = _find(session, job_id)
        new = check_transition(job.status, status, job=f"job {short_id(job.id)}")
        now = utcnow()
        if new not in (JobStatus.QUEUED, JobStatus.INTERRUPTED) and job.started_at is None:
            job.started_at = fields.pop("started_at", None) or now
        if new in TERMINAL and job.completed_at is None:
            job.completed_at = fields.pop("completed_at", None) or now
        job.status = new
        for key, value in fields.items():
            setattr(job, key, value)
        job.updated_at = now
        session.add(job)
    return job


def update_job(ledger: Ledger, job_id: uuid.UUID | str, **fields: Any) -> TrainingJob:
    """Set progress and bookkeeping fields (step, epoch, cost, ETA…) without changing status."""
    _check_fields(fields)
    with ledger.write() as session:
        job = _find(session, job_id)
        for key, value in fields.items():
            setattr(job, key, value)
        job.updated_at = utcnow()
        session.add(job)
    return job


def _check_fields(fields: dict[str, Any]) -> None:
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable through the status machine: {', '.join(sorted(unknown))}")


def jobs_by_status(ledger: Ledger, statuses: Iterable[str]) -> list[TrainingJob]:
    """Every job whose status is one of ``statuses``, oldest first."""
    statement = (
        select(TrainingJob).where(col(TrainingJob.status).in_(list(statuses))).order_by(col(TrainingJob.created_at))
    )
    with ledger.read() as session:
        return list(session.exec(statement).all())


def acquire_lease(ledger: Ledger, job_id: uuid.UUID, owner: str, ttl_seconds: float = 15.0) -> bool:
    """Take or renew the right to supervise a job; False while another live owner holds it.

    One supervisor at a time ingests a job's events and drives its lifecycle; others only watch. A lease
    not renewed within ``ttl_seconds`` (its holder died) can be taken over.
    """
    now = utcnow()
    statement = (
        sa.update(TrainingJob)
        .where(
            col(TrainingJob.id) == job_id,
            sa.or_(
                col(TrainingJob.lease_owner).is_(None),
                col(TrainingJob.lease_owner) == owner,
                col(TrainingJob.lease_expires_at) < now,
            ),
        )
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl_seconds))
    )
    with ledger.write() as session:
        result = session.connection().execute(statement)
    return result.rowcount == 1


def release_lease(ledger: Ledger, job_id: uuid.UUID, owner: str) -> None:
    statement = (
        sa.update(TrainingJob)
        .where(col(TrainingJob.id) == job_id, col(TrainingJob.lease_owner) == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
    with ledger.write() as session:
        session.connection().execute(statement)

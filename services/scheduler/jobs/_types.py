"""The job's types: its status, what a listing shows, what the dispatcher claims."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.common.contracts import cell_from_json
from services.common.types import Cell
from services.scheduler._models import JobRow


class JobStatus(StrEnum):
    DISPATCHED = "dispatched"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (JobStatus.DISPATCHED, JobStatus.RETRY_WAIT)


def job_id(run_id: str, index: int) -> str:
    return f"{run_id}-{index}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: str
    run_id: str
    index: int
    attempt: int
    status: JobStatus
    pool: str
    target_url: str
    cell: Cell
    account: str
    outcome: str
    error: str
    retry_at: datetime | None
    deadline: datetime

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(
            id=row.id,
            run_id=row.run_id,
            index=row.index,
            attempt=row.attempt,
            status=JobStatus(row.status),
            pool=row.pool,
            target_url=row.target_url,
            cell=cell_from_json(row.cell),
            account=row.account or "",
            outcome=row.outcome or "",
            error=row.error or "",
            retry_at=row.retry_at,
            deadline=row.deadline,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryDue:
    """A job waiting to retry whose time has come; `attempt` is its last one."""

    job_id: str
    index: int
    attempt: int
    target_url: str
    cell: Cell
    pool: str


@dataclass(slots=True, kw_only=True)
class Claim:
    """A job the dispatcher sends next: a due retry, or a new index of the run's plan."""

    index: int
    target_url: str
    cell: Cell
    pool: str
    account: str | None = None
    retry: RetryDue | None = None

    @property
    def attempt(self) -> int:
        return 1 if self.retry is None else self.retry.attempt + 1


@dataclass(frozen=True, slots=True)
class Stored:
    """A reported result and whether this report stored it (False: a repeat)."""

    job_id: str
    attempt: int
    new: bool

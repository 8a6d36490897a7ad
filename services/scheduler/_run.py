"""A run as the scheduler knows it, and its codec: from its database row, to its message."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from services.common.contracts import spec_to_pb, timestamp
from services.common.spec import RunSpec
from services.scheduler._models import RunRow
from smartfleet.v1 import runs_pb2


class RunStatus(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.FAILED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: str
    name: str
    status: RunStatus
    spec: RunSpec
    planned: int
    next_index: int
    dispatched: int
    succeeded: int
    failed: int
    retrying: int
    in_flight: int
    dead: int
    cancelled: int
    expedited_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    labels: dict[str, str] = field(default_factory=dict)
    created_by: str = ""
    # Why a running run sends nothing although sessions are due (set by the dispatcher).
    waiting_reason: str = ""

    @classmethod
    def from_row(cls, row: RunRow, *, spec: RunSpec | None = None) -> Run:
        """`spec`: the row's spec already validated (validating a stored spec is the costly
        part of a read)."""
        return cls(
            id=row.id,
            name=row.name,
            status=RunStatus(row.status),
            spec=spec or RunSpec.model_validate(row.spec),
            planned=row.planned,
            next_index=row.next_index,
            dispatched=row.dispatched,
            succeeded=row.succeeded,
            failed=row.failed,
            retrying=row.retrying,
            in_flight=row.in_flight,
            dead=row.dead,
            cancelled=row.cancelled,
            expedited_at=row.expedited_at,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            labels=dict(row.labels or {}),
            created_by=row.created_by or "",
        )

    def to_pb(self) -> runs_pb2.Run:
        message = runs_pb2.Run(
            id=self.id,
            name=self.name,
            status=_STATUS_TO_PB[self.status],
            spec=spec_to_pb(self.spec),
            counters=runs_pb2.RunCounters(
                planned=self.planned,
                dispatched=self.dispatched,
                succeeded=self.succeeded,
                failed=self.failed,
                retrying=self.retrying,
                in_flight=self.in_flight,
                dead=self.dead,
                cancelled=self.cancelled,
            ),
            created_at=timestamp(self.created_at),
            waiting_reason=self.waiting_reason,
            created_by=self.created_by,
        )
        if self.labels:
            message.labels.update(self.labels)
        if self.started_at:
            message.started_at.CopyFrom(timestamp(self.started_at))
        if self.finished_at:
            message.finished_at.CopyFrom(timestamp(self.finished_at))
        return message


_STATUS_TO_PB = {
    status: runs_pb2.RunStatus.Value(f"RUN_STATUS_{status.name}") for status in RunStatus
}

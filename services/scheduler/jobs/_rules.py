"""The two decisions every transition shares, each made only here: retry or dead, and whether
the run is complete; and the counter update that applies them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, literal, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.spec import RetryPolicy
from services.common.types import ErrorClass
from services.scheduler._events import RunCompleted, RunsProgressed, emit
from services.scheduler._models import RunRow
from services.scheduler._run import RunStatus
from services.scheduler._runs import RunStore
from services.scheduler.jobs._types import JobStatus

logger = logging.getLogger(__name__)


def after_failure(
    error_class: ErrorClass, attempt: int, policy: RetryPolicy, now: datetime, *, at_once: bool
) -> tuple[JobStatus, datetime | None]:
    """Retry or dead — decided here only. Transient errors wait the policy's backoff (unless
    `at_once`: a lost attempt goes again now); account errors retry at once with another
    account; after the last attempt the job is dead; permanent errors are final."""
    if error_class not in (ErrorClass.TRANSIENT, ErrorClass.ACCOUNT):
        return JobStatus.FAILED, None
    if attempt >= policy.max_attempts:
        return JobStatus.DEAD, None
    if at_once or error_class is ErrorClass.ACCOUNT:
        return JobStatus.RETRY_WAIT, now
    return JobStatus.RETRY_WAIT, now + policy.wait_before(attempt + 1)


@dataclass(slots=True)
class Delta:
    """A change of a run's counters."""

    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    retrying: int = 0
    in_flight: int = 0

    def leave(self, status: JobStatus) -> None:
        if status is JobStatus.DISPATCHED:
            self.in_flight -= 1
        elif status is JobStatus.RETRY_WAIT:
            self.retrying -= 1

    def enter(self, status: JobStatus) -> None:
        if status is JobStatus.SUCCEEDED:
            self.succeeded += 1
        elif status in (JobStatus.FAILED, JobStatus.DEAD):
            self.failed += 1
            self.dead += status is JobStatus.DEAD
        elif status is JobStatus.RETRY_WAIT:
            self.retrying += 1
        elif status is JobStatus.DISPATCHED:
            self.in_flight += 1


def finished_condition(delta: Delta) -> ColumnElement[bool]:
    """The run is complete — decided here only: running or paused, and every planned job
    final once `delta` is applied (SET sees the row as it was, hence the delta)."""
    return and_(
        RunRow.status.in_([RunStatus.RUNNING, RunStatus.PAUSED]),
        RunRow.succeeded + delta.succeeded + RunRow.failed + delta.failed >= RunRow.planned,
    )


async def apply_counters(
    session: AsyncSession, runs: RunStore, deltas: dict[str, Delta], now: datetime
) -> list[str]:
    """Apply each run's counter delta and complete the runs it finishes, one statement per run;
    emits RunsProgressed, and RunCompleted for each run completed here. Returns those runs."""
    completed = []
    for run_id, delta in deltas.items():
        finished = finished_condition(delta)
        finished_at = await session.scalar(
            update(RunRow)
            .where(RunRow.id == run_id)
            .values(
                succeeded=RunRow.succeeded + delta.succeeded,
                failed=RunRow.failed + delta.failed,
                dead=RunRow.dead + delta.dead,
                retrying=RunRow.retrying + delta.retrying,
                in_flight=RunRow.in_flight + delta.in_flight,
                status=case((finished, RunStatus.COMPLETED.value), else_=RunRow.status),
                finished_at=case(
                    (finished, literal(now, RunRow.finished_at.type)),
                    else_=RunRow.finished_at,
                ),
            )
            .returning(RunRow.finished_at)
        )
        # Only this statement stamps `now`, this transaction's own time, as finished_at.
        if finished_at == now:
            completed.append(run_id)
    if deltas:
        emit(session, RunsProgressed(frozenset(deltas)))
    await emit_completed(session, runs, completed)
    return completed


async def emit_completed(session: AsyncSession, runs: RunStore, run_ids: list[str]) -> None:
    for run_id in run_ids:
        row = await session.get(RunRow, run_id, populate_existing=True)
        if row is not None:
            run = runs.from_row(row)
            emit(session, RunCompleted(run))
            logger.info("run %s completed: %d ok, %d failed", run_id, run.succeeded, run.failed)

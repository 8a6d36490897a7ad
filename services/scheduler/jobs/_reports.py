"""The report transition: a batch of results stored in one transaction, idempotent by
(job id, attempt), each deciding its job once.

A result decides its job when it is the report of the job's current attempt, or when it is a
success arriving late for a job meanwhile waiting to retry ("first success wins"). What it
decides follows the error class (`after_failure`): ok → succeeded; permanent → failed;
transient → retry after the run's backoff, or dead after the last attempt; account → the
account cools down and the job retries at once with another account.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from operator import itemgetter
from typing import Protocol, cast

from sqlalchemy import Table, Update, bindparam, select, update

from services.common.contracts import result_to_row
from services.common.types import ErrorClass, SessionResult
from services.scheduler._db import Database
from services.scheduler._events import JobDead, JobsReleased, ResultsStored, emit
from services.scheduler._models import JobRow, ResultRow
from services.scheduler._runs import RunStore
from services.scheduler.jobs._rules import Delta, after_failure, apply_counters
from services.scheduler.jobs._types import JobStatus, Stored

logger = logging.getLogger(__name__)

_JOBS = cast(Table, JobRow.__table__)

# A job's row after a decision: final (succeeded, failed, dead) or waiting to retry. Executed
# once per batch with every job's parameters (executemany), compiled once and cached.
_FINAL = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        outcome=bindparam("b_outcome"),
        error=bindparam("b_error"),
        finished_at=bindparam("b_at"),
    )
)
_RETRY = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        outcome=bindparam("b_outcome"),
        error=bindparam("b_error"),
        retry_at=bindparam("b_at"),
        account=None,
    )
)


class AccountCooler(Protocol):
    async def cool_down(self, name: str, *, now: datetime) -> None: ...


@dataclass(slots=True)
class _Job:
    """The columns of a job row a decision reads (locked for the transaction)."""

    id: str
    run_id: str
    status: JobStatus
    attempt: int
    pool: str


async def store_results(
    db: Database, runs: RunStore, results: Sequence[SessionResult], cooler: AccountCooler | None
) -> list[Stored]:
    unique = list({(r.job_id, r.attempt): r for r in results}.values())
    if not unique:
        return []
    released: Counter[tuple[str, str]] = Counter()
    cool: list[str] = []
    deltas: dict[str, Delta] = {}
    inserted: set[tuple[str, int]] = set()
    async with db.write() as session:
        # Taken once the writer is ours: what is left after it is this transaction's work.
        now = datetime.now(UTC)
        jobs = {
            row.id: _Job(row.id, row.run_id, JobStatus(row.status), row.attempt, row.pool)
            for row in await session.execute(
                select(JobRow.id, JobRow.run_id, JobRow.status, JobRow.attempt, JobRow.pool)
                .where(JobRow.id.in_({r.job_id for r in unique}))
                .with_for_update()
            )
        }
        valid = []
        for result in unique:
            job = jobs.get(result.job_id)
            if job is not None and job.run_id == result.run_id:
                valid.append(result)
            else:
                logger.warning(
                    "dropping result for unknown job %s (run %s)", result.job_id, result.run_id
                )
        if valid:
            # One statement for the batch (executemany); what conflicts is a repeat.
            rows = await session.execute(
                db.insert_ignoring_conflicts(ResultRow.__table__).returning(
                    ResultRow.job_id, ResultRow.attempt
                ),
                [result_to_row(r, stored_at=now) for r in valid],
            )
            inserted = {(job_id, attempt) for job_id, attempt in rows}
        stored = tuple(r for r in valid if (r.job_id, r.attempt) in inserted)
        changes: list[tuple[Update, dict[str, object]]] = []
        for result in stored:
            job = jobs[result.job_id]
            decided = await _decide(runs, job, result, now, deltas)
            if decided is None:
                continue
            previous, change = decided
            changes.append(
                (_RETRY if change["b_status"] is JobStatus.RETRY_WAIT else _FINAL, change)
            )
            if previous is JobStatus.DISPATCHED:
                released[(job.run_id, job.pool)] += 1
            if change["b_status"] is JobStatus.DEAD:
                emit(
                    session,
                    JobDead(
                        run_id=job.run_id,
                        job_id=job.id,
                        index=result.index,
                        attempt=result.attempt,
                        outcome=result.outcome.value,
                        error=result.error[:2000],
                    ),
                )
            if result.error_class is ErrorClass.ACCOUNT and result.account:
                cool.append(result.account)
        # In order: two results of one job in a batch change its row one after the other.
        for statement, group in groupby(changes, key=itemgetter(0)):
            await session.execute(statement, [change for _, change in group])
        if stored:
            emit(session, ResultsStored(stored))
        if released:
            emit(session, JobsReleased(released))
        await apply_counters(session, runs, deltas, now)
    if cooler is not None:
        for name in cool:
            await cooler.cool_down(name, now=now)
    return [Stored(r.job_id, r.attempt, (r.job_id, r.attempt) in inserted) for r in unique]


async def _decide(
    runs: RunStore, job: _Job, result: SessionResult, now: datetime, deltas: dict[str, Delta]
) -> tuple[JobStatus, dict[str, object]] | None:
    """What this result makes of the job: its previous status and the row's new values (the
    parameters of _FINAL or _RETRY), its run's counters moved in `deltas`; None when it decides
    nothing (a repeat, or a late failure of an attempt already replaced)."""
    previous = job.status
    current_attempt = previous is JobStatus.DISPATCHED and job.attempt == result.attempt
    late_success = result.ok and previous in (JobStatus.DISPATCHED, JobStatus.RETRY_WAIT)
    if not (current_attempt or late_success):
        return None
    at: datetime | None = now
    if result.ok:
        status = JobStatus.SUCCEEDED
    else:
        spec = await runs.spec(job.run_id)
        status, retry_at = after_failure(
            result.error_class, job.attempt, spec.retry, now, at_once=False
        )
        if status is JobStatus.RETRY_WAIT:
            at = retry_at
    delta = deltas.setdefault(job.run_id, Delta())
    delta.leave(previous)
    delta.enter(status)
    # A batch may hold two results of one job (attempts): the second sees the first's decision.
    job.status = status
    return previous, {
        "b_id": job.id,
        "b_status": status,
        "b_outcome": result.outcome.value,
        "b_error": result.error[:2000] or None,
        "b_at": at,
    }

"""The owner of job rows: every read and transition of a job, and the run counters they move.

    dispatched ──ok──────────────────────────▶ succeeded
        │      ──permanent error─────────────▶ failed
        │      ──transient/account error, or no result by the deadline (lost)
        │              ──▶ retry_wait (or dead after the last attempt)
        ▲                      │
        └──── claimed again ───┘          every unfinished job ──cancel──▶ cancelled

"Retry or dead" and "the run is complete" are decided in _rules.py only. Each transition
moves its run's counters in the same transaction and emits its events (_events.py): jobs
dispatched and released (the credit ledger follows them), results stored, jobs dead, runs
completed or cancelled, runs progressed.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update

from services.common.contracts import cell_from_json, cell_to_json
from services.common.errors import FailedPrecondition, NotFound
from services.common.types import ErrorClass, SessionResult
from services.scheduler._db import Database
from services.scheduler._events import (
    JobDead,
    JobsDispatched,
    JobsReleased,
    RunCancelled,
    RunsProgressed,
    emit,
)
from services.scheduler._models import JobRow, RunRow
from services.scheduler._run import Run, RunStatus
from services.scheduler._runs import RunStore
from services.scheduler.jobs._reports import AccountCooler, store_results
from services.scheduler.jobs._rules import (
    Delta,
    after_failure,
    apply_counters,
    emit_completed,
    finished_condition,
)
from services.scheduler.jobs._types import Claim, Job, JobStatus, RetryDue, Stored, job_id

logger = logging.getLogger(__name__)

# At most this many jobs are recovered in one transaction.
MAX_BATCH = 500

_INSERT_JOBS = insert(cast(Table, JobRow.__table__))


class JobStore:
    """Every read and transition of job rows (and the run counters they move)."""

    def __init__(self, db: Database, runs: RunStore, *, accounts: AccountCooler | None) -> None:
        self._db = db
        self._runs = runs
        self._accounts = accounts

    # -- reads -------------------------------------------------------------------------------

    async def outstanding(self) -> list[tuple[str, str, int]]:
        """(run, pool, jobs out on the bus): what the credit ledger starts from."""
        async with self._db.read() as session:
            rows = await session.execute(
                select(JobRow.run_id, JobRow.pool, func.count())
                .where(JobRow.status == JobStatus.DISPATCHED)
                .group_by(JobRow.run_id, JobRow.pool)
            )
            return [(run_id, pool, count) for run_id, pool, count in rows]

    async def retries(self, now: datetime) -> tuple[dict[str, int], datetime | None]:
        """Jobs due to retry per run, and when the next one not yet due will be."""
        async with self._db.read() as session:
            due = await session.execute(
                select(JobRow.run_id, func.count())
                .where(JobRow.status == JobStatus.RETRY_WAIT, JobRow.retry_at <= now)
                .group_by(JobRow.run_id)
            )
            counts = {run_id: int(count) for run_id, count in due}
            upcoming = await session.scalar(
                select(func.min(JobRow.retry_at)).where(
                    JobRow.status == JobStatus.RETRY_WAIT, JobRow.retry_at > now
                )
            )
        return counts, upcoming

    async def due_retries(self, run_id: str, now: datetime, *, limit: int) -> list[RetryDue]:
        async with self._db.read() as session:
            rows = await session.execute(
                select(
                    JobRow.id,
                    JobRow.index,
                    JobRow.attempt,
                    JobRow.target_url,
                    JobRow.cell,
                    JobRow.pool,
                )
                .where(
                    JobRow.run_id == run_id,
                    JobRow.status == JobStatus.RETRY_WAIT,
                    JobRow.retry_at <= now,
                )
                .order_by(JobRow.retry_at)
                .limit(limit)
            )
            return [
                RetryDue(
                    job_id=id_,
                    index=index,
                    attempt=attempt,
                    target_url=url,
                    cell=cell_from_json(cell),
                    pool=pool,
                )
                for id_, index, attempt, url, cell, pool in rows
            ]

    async def list_jobs(
        self,
        run_id: str,
        *,
        statuses: Sequence[JobStatus] = (),
        after_index: int = -1,
        limit: int,
    ) -> list[Job]:
        """A run's jobs in index order, after `after_index`, in any of `statuses` (none: all)."""
        await self._runs.get(run_id)
        statement = select(JobRow).where(JobRow.run_id == run_id, JobRow.index > after_index)
        if statuses:
            statement = statement.where(JobRow.status.in_([s.value for s in statuses]))
        async with self._db.read() as session:
            rows = await session.scalars(statement.order_by(JobRow.index).limit(limit))
            return [Job.from_row(row) for row in rows]

    async def dispatched_as(self, job_id: str, account: str) -> bool:
        """Whether the job is out on the bus (or running) as this account."""
        async with self._db.read() as session:
            found = await session.scalar(
                select(JobRow.id).where(
                    JobRow.id == job_id,
                    JobRow.status == JobStatus.DISPATCHED,
                    JobRow.account == account,
                )
            )
        return found is not None

    async def dispatched(self, *, after: str, limit: int) -> list[Job]:
        """Jobs out on the bus, in id order after `after` (for the republish at start)."""
        async with self._db.read() as session:
            rows = await session.scalars(
                select(JobRow)
                .where(JobRow.status == JobStatus.DISPATCHED, JobRow.id > after)
                .order_by(JobRow.id)
                .limit(limit)
            )
            return [Job.from_row(row) for row in rows]

    # -- claim -------------------------------------------------------------------------------

    async def claim(
        self, run: Run, claims: Sequence[Claim], *, now: datetime, deadline: datetime
    ) -> bool:
        """Advance the run's cursor past its new jobs, create their rows and re-arm its retries,
        in one transaction. False (nothing claimed) when the run moved on meanwhile (paused,
        cancelled, or its cursor taken by another claim)."""
        new = [c for c in claims if c.retry is None]
        retries = [c for c in claims if c.retry is not None]
        async with self._db.write() as session:
            claimed = await session.scalar(
                update(RunRow)
                .where(
                    RunRow.id == run.id,
                    RunRow.status == RunStatus.RUNNING,
                    RunRow.next_index == run.next_index,
                )
                .values(
                    next_index=RunRow.next_index + len(new),
                    dispatched=RunRow.dispatched + len(claims),
                    in_flight=RunRow.in_flight + len(claims),
                    retrying=RunRow.retrying - len(retries),
                )
                .returning(RunRow.id)
            )
            if claimed is None:
                return False
            for claim in retries:
                assert claim.retry is not None
                rearmed = await session.execute(
                    update(JobRow)
                    .where(JobRow.id == claim.retry.job_id, JobRow.status == JobStatus.RETRY_WAIT)
                    .values(
                        status=JobStatus.DISPATCHED,
                        attempt=claim.attempt,
                        dispatched_at=now,
                        deadline=deadline,
                        retry_at=None,
                        account=claim.account,
                    )
                )
                if getattr(rearmed, "rowcount", 1) != 1:
                    raise FailedPrecondition(f"job {claim.retry.job_id} left retry_wait mid-claim")
            if new:
                # One executemany of a cached statement, not an ORM object per job.
                await session.execute(
                    _INSERT_JOBS, [_new_row(run.id, claim, now, deadline) for claim in new]
                )
            emit(
                session,
                JobsDispatched(run.id, dict(Counter(claim.pool for claim in claims))),
                RunsProgressed(frozenset((run.id,))),
            )
        return True

    # -- reports, deadlines, recovery ----------------------------------------------------------

    async def report(self, results: Sequence[SessionResult]) -> list[Stored]:
        """Store a batch of results and decide their jobs (see _reports.py)."""
        return await store_results(self._db, self._runs, results, self._accounts)

    async def extend_deadlines(self, job_ids: Sequence[str], *, until: datetime) -> int:
        """A node says these jobs still run: their deadlines move out to `until`."""
        async with self._db.write() as session:
            result = await session.execute(
                update(JobRow)
                .where(
                    JobRow.id.in_(job_ids),
                    JobRow.status == JobStatus.DISPATCHED,
                    JobRow.deadline < until,
                )
                .values(deadline=until)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def recover_overdue(self, now: datetime | None = None) -> int:
        """Jobs dispatched but not reported by their deadline count as a lost attempt: they
        retry at once with the next attempt number, or end dead after their last one."""
        now = now or datetime.now(UTC)
        async with self._db.write() as session:
            overdue = list(
                await session.scalars(
                    select(JobRow)
                    .where(JobRow.status == JobStatus.DISPATCHED, JobRow.deadline < now)
                    .limit(MAX_BATCH)
                    .with_for_update()
                )
            )
            if not overdue:
                return 0
            deltas: dict[str, Delta] = {}
            for row in overdue:
                spec = await self._runs.spec(row.run_id)
                status, retry_at = after_failure(
                    ErrorClass.TRANSIENT, row.attempt, spec.retry, now, at_once=True
                )
                row.status, row.retry_at = status, retry_at
                row.outcome, row.error = "lost", "no result reported by the job's deadline"
                if status.final:
                    row.finished_at = now
                delta = deltas.setdefault(row.run_id, Delta())
                delta.leave(JobStatus.DISPATCHED)
                delta.enter(status)
                if status is JobStatus.DEAD:
                    emit(session, _dead(row))
            emit(session, JobsReleased(Counter((row.run_id, row.pool) for row in overdue)))
            await apply_counters(session, self._runs, deltas, now)
        logger.warning("recovered %d overdue jobs", len(overdue))
        return len(overdue)

    async def complete_finished(self, run_ids: Sequence[str] | None = None) -> list[str]:
        """A sweep for runs whose every planned job is final but are not completed yet."""
        async with self._db.write() as session:
            statement = (
                update(RunRow)
                .where(finished_condition(Delta()))
                .values(status=RunStatus.COMPLETED, finished_at=func.now())
                .returning(RunRow.id)
            )
            if run_ids is not None:
                statement = statement.where(RunRow.id.in_(run_ids))
            completed = list((await session.scalars(statement)).all())
            await emit_completed(session, self._runs, completed)
        return completed

    # -- cancel ------------------------------------------------------------------------------

    async def cancel(self, run_id: str) -> Run:
        """Final at once: queued and in-flight jobs are withdrawn, results so far are kept."""
        async with self._db.write() as session:
            # Lock the run first: a claim in flight commits its new jobs before we look.
            row = await session.get(RunRow, run_id, with_for_update=True)
            if row is None:
                raise NotFound("run", run_id)
            if RunStatus(row.status).final:
                raise FailedPrecondition(f"run {run_id} is already {row.status}")
            now = datetime.now(UTC)
            withdrawn = {
                pool: int(count)
                for pool, count in await session.execute(
                    select(JobRow.pool, func.count())
                    .where(JobRow.run_id == run_id, JobRow.status == JobStatus.DISPATCHED)
                    .group_by(JobRow.pool)
                )
            }
            await session.execute(
                update(JobRow)
                .where(
                    JobRow.run_id == run_id,
                    JobRow.status.in_([JobStatus.DISPATCHED, JobStatus.RETRY_WAIT]),
                )
                .values(status=JobStatus.CANCELLED, outcome="cancelled", finished_at=now)
            )
            row.status = RunStatus.CANCELLED
            row.finished_at = now
            row.cancelled = row.planned - row.succeeded - row.failed
            row.in_flight = 0
            row.retrying = 0
            await session.flush()
            run = self._runs.from_row(row)
            emit(
                session,
                JobsReleased(Counter({(run_id, pool): n for pool, n in withdrawn.items()})),
                RunCancelled(run, withdrawn),
            )
        self._runs.forget(run_id)
        logger.info("run %s cancelled", run_id)
        return run


def _dead(row: Any) -> JobDead:
    return JobDead(
        run_id=row.run_id,
        job_id=row.id,
        index=row.index,
        attempt=row.attempt,
        outcome=row.outcome or "",
        error=row.error or "",
    )


def _new_row(run_id: str, claim: Claim, now: datetime, deadline: datetime) -> dict[str, object]:
    return {
        "id": job_id(run_id, claim.index),
        "run_id": run_id,
        "index": claim.index,
        "attempt": 1,
        "status": JobStatus.DISPATCHED.value,
        "pool": claim.pool,
        "target_url": claim.target_url,
        "cell": cell_to_json(claim.cell),
        "account": claim.account,
        "outcome": None,
        "error": None,
        "dispatched_at": now,
        "deadline": deadline,
        "retry_at": None,
        "finished_at": None,
    }

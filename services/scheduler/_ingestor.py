"""Result ingestion: a batch in one transaction, idempotent by (job id, attempt).

A result decides its job when it is the report of the job's current attempt, or when it is a
success arriving late for a job meanwhile waiting to retry ("first success wins"). What it
decides follows the error class: ok → succeeded; permanent → failed; transient → retry after
the run's backoff, or `dead` after the last attempt; account → the account cools down and the
job retries at once with another account.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.types import ErrorClass, Outcome, SessionResult
from services.scheduler._credit import CreditLedger
from services.scheduler._db import Database
from services.scheduler._dispatcher import cell_to_json
from services.scheduler._hosts import HostLimiter
from services.scheduler._models import JobRow, ResultRow, RunRow
from services.scheduler._runs import RunStatus, RunStore

logger = logging.getLogger(__name__)

# Outcomes that say the target host struggles (it gets a backoff), as opposed to the session.
_HOST_ERRORS = {Outcome.NAVIGATION_ERROR, Outcome.TIMEOUT}


class AccountCooler(Protocol):
    async def cool_down(self, name: str, *, now: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class Stored:
    job_id: str
    attempt: int
    new: bool


@dataclass(slots=True)
class _Delta:
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    retrying: int = 0
    in_flight: int = 0


def _result_row(result: SessionResult) -> dict[str, object]:
    return {
        "job_id": result.job_id,
        "attempt": result.attempt,
        "run_id": result.run_id,
        "index": result.index,
        "outcome": result.outcome.value,
        "error_class": result.error_class.value,
        "http_status": result.http_status,
        "duration_ms": result.duration_ms,
        "node_id": result.node_id,
        "engine": result.engine,
        "cell_key": result.cell.key,
        "account": result.account or None,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "detail": {
            "error": result.error,
            "target_url": result.target_url,
            "final_url": result.final_url,
            "redirect_chain": list(result.redirect_chain),
            "timing": asdict(result.timing),
            "browser_version": result.browser_version,
            "extracted": result.extracted,
            "steps": [asdict(step) for step in result.steps],
            "artifacts": list(result.artifacts),
            "cell": cell_to_json(result.cell),
            "vitals": asdict(result.vitals),
            "bytes_transferred": result.bytes_transferred,
            "request_count": result.request_count,
            "console_errors": list(result.console_errors),
        },
    }


def host_error(result: SessionResult) -> bool:
    return result.outcome in _HOST_ERRORS or (
        result.outcome is Outcome.HTTP_ERROR and result.http_status >= 500
    )


class ResultIngestor:
    """Stores results; a job's status and its run's counters change once per decision."""

    def __init__(
        self,
        *,
        db: Database,
        runs: RunStore,
        ledger: CreditLedger,
        hosts: HostLimiter,
        on_change: Callable[[set[str]], None],
        accounts: AccountCooler | None = None,
    ) -> None:
        self._db = db
        self._runs = runs
        self._ledger = ledger
        self._hosts = hosts
        self._on_change = on_change
        self.accounts = accounts

    async def ingest(self, results: Sequence[SessionResult]) -> list[Stored]:
        unique = list({(r.job_id, r.attempt): r for r in results}.values())
        if not unique:
            return []
        now = datetime.now(UTC)
        freed: list[tuple[str, str]] = []
        cool: list[str] = []
        async with self._db.write() as session:
            jobs = {
                row.id: row
                for row in await session.scalars(
                    select(JobRow)
                    .where(JobRow.id.in_({r.job_id for r in unique}))
                    .with_for_update()
                )
            }
            valid = [r for r in unique if r.job_id in jobs and jobs[r.job_id].run_id == r.run_id]
            for result in unique:
                if result not in valid:
                    logger.warning(
                        "dropping result for unknown job %s (run %s)", result.job_id, result.run_id
                    )
            inserted: set[tuple[str, int]] = set()
            if valid:
                rows = await session.execute(
                    self._db.insert_ignoring_conflicts(
                        ResultRow.__table__, [_result_row(r) for r in valid]
                    ).returning(ResultRow.job_id, ResultRow.attempt)
                )
                inserted = {(job_id, attempt) for job_id, attempt in rows}
            deltas: dict[str, _Delta] = {}
            for result in valid:
                if (result.job_id, result.attempt) not in inserted:
                    continue
                self._hosts.record(
                    urlsplit(result.target_url).hostname or "", error=host_error(result), now=now
                )
                job = jobs[result.job_id]
                decided = await self._decide(job, result, now)
                if decided is None:
                    continue
                previous, delta = decided
                deltas.setdefault(job.run_id, _Delta())
                total = deltas[job.run_id]
                for name in ("succeeded", "failed", "dead", "retrying", "in_flight"):
                    setattr(total, name, getattr(total, name) + getattr(delta, name))
                if previous == "dispatched":
                    freed.append((job.run_id, job.pool))
                if result.error_class is ErrorClass.ACCOUNT and result.account:
                    cool.append(result.account)
            await self._count(session, deltas, now)
        for (run_id, pool), count in Counter(freed).items():
            self._ledger.returned(pool, count, run_id=run_id)
        if self.accounts is not None:
            for name in cool:
                await self.accounts.cool_down(name, now=now)
        if deltas:
            self._on_change(set(deltas))
        return [Stored(r.job_id, r.attempt, (r.job_id, r.attempt) in inserted) for r in unique]

    async def _decide(
        self, job: JobRow, result: SessionResult, now: datetime
    ) -> tuple[str, _Delta] | None:
        """Change the job row for this result; returns its previous status and the counter delta."""
        previous = job.status
        current_attempt = previous == "dispatched" and job.attempt == result.attempt
        late_success = result.ok and previous in ("dispatched", "retry_wait")
        if not (current_attempt or late_success):
            return None
        delta = _Delta()
        if previous == "dispatched":
            delta.in_flight -= 1
        else:
            delta.retrying -= 1
        job.outcome = result.outcome.value
        job.error = result.error[:2000] or None
        if result.ok:
            job.status, job.finished_at = "succeeded", now
            delta.succeeded += 1
            return previous, delta
        spec = await self._runs.spec(job.run_id)
        retryable = result.error_class in (ErrorClass.TRANSIENT, ErrorClass.ACCOUNT)
        if retryable and job.attempt < spec.retry.max_attempts:
            job.status = "retry_wait"
            wait = (
                spec.retry.wait_before(job.attempt + 1)
                if result.error_class is ErrorClass.TRANSIENT
                else None
            )
            job.retry_at = now + wait if wait is not None else now
            job.account = None
            delta.retrying += 1
        elif retryable:
            job.status, job.finished_at = "dead", now
            delta.failed += 1
            delta.dead += 1
        else:
            job.status, job.finished_at = "failed", now
            delta.failed += 1
        return previous, delta

    @staticmethod
    async def _count(session: AsyncSession, deltas: dict[str, _Delta], now: datetime) -> None:
        for run_id, delta in deltas.items():
            await session.execute(
                update(RunRow)
                .where(RunRow.id == run_id)
                .values(
                    succeeded=RunRow.succeeded + delta.succeeded,
                    failed=RunRow.failed + delta.failed,
                    dead=RunRow.dead + delta.dead,
                    retrying=RunRow.retrying + delta.retrying,
                    in_flight=RunRow.in_flight + delta.in_flight,
                )
            )
        if deltas:
            await session.execute(
                update(RunRow)
                .where(
                    RunRow.id.in_(deltas),
                    RunRow.status.in_([RunStatus.RUNNING, RunStatus.PAUSED]),
                    RunRow.succeeded + RunRow.failed >= RunRow.planned,
                )
                .values(status=RunStatus.COMPLETED, finished_at=now)
            )

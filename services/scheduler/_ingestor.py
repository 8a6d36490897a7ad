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
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from typing import Protocol, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, Update, and_, bindparam, case, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.types import Cell, ErrorClass, Outcome, SessionResult
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

    def add(self, other: _Delta) -> None:
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.dead += other.dead
        self.retrying += other.retrying
        self.in_flight += other.in_flight


@dataclass(slots=True)
class _Job:
    """The columns of a job row a decision reads (locked for the transaction)."""

    id: str
    run_id: str
    status: str
    attempt: int
    pool: str


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


@lru_cache(maxsize=4096)
def _cell_columns(cell: Cell) -> tuple[str, dict[str, object]]:
    """A cell's key and JSON: a run has few cells, its results many."""
    return cell.key, cell_to_json(cell)


def _result_row(result: SessionResult, *, stored_at: datetime) -> dict[str, object]:
    # Spelled out: dataclasses.asdict copies deeply and costs several times as much.
    cell_key, cell_json = _cell_columns(result.cell)
    timing, vitals = result.timing, result.vitals
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
        "cell_key": cell_key,
        "account": result.account or None,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "stored_at": stored_at,
        "detail": {
            "error": result.error,
            "target_url": result.target_url,
            "final_url": result.final_url,
            "redirect_chain": list(result.redirect_chain),
            "timing": {
                "dns_ms": timing.dns_ms,
                "connect_ms": timing.connect_ms,
                "ttfb_ms": timing.ttfb_ms,
                "dom_content_loaded_ms": timing.dom_content_loaded_ms,
                "load_ms": timing.load_ms,
            },
            "browser_version": result.browser_version,
            "extracted": result.extracted,
            "steps": [asdict(step) for step in result.steps],
            "artifacts": list(result.artifacts),
            "cell": cell_json,
            "vitals": {
                "ttfb_ms": vitals.ttfb_ms,
                "fcp_ms": vitals.fcp_ms,
                "lcp_ms": vitals.lcp_ms,
                "cls": vitals.cls,
            },
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
        freed: list[tuple[str, str]] = []
        cool: list[str] = []
        deltas: dict[str, _Delta] = {}
        inserted: set[tuple[str, int]] = set()
        async with self._db.write() as session:
            # Taken once the writer is ours: what is left after it is this transaction's work.
            now = datetime.now(UTC)
            jobs = {
                row.id: _Job(*row)
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
                    self._db.insert_ignoring_conflicts(ResultRow.__table__).returning(
                        ResultRow.job_id, ResultRow.attempt
                    ),
                    [_result_row(r, stored_at=now) for r in valid],
                )
                inserted = {(job_id, attempt) for job_id, attempt in rows}
            changes: list[tuple[Update, dict[str, object]]] = []
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
                previous, delta, change = decided
                changes.append((_RETRY if change["b_status"] == "retry_wait" else _FINAL, change))
                deltas.setdefault(job.run_id, _Delta()).add(delta)
                if previous == "dispatched":
                    freed.append((job.run_id, job.pool))
                if result.error_class is ErrorClass.ACCOUNT and result.account:
                    cool.append(result.account)
            # In order: two results of one job in a batch change its row one after the other.
            for statement, group in groupby(changes, key=itemgetter(0)):
                await session.execute(statement, [change for _, change in group])
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
        self, job: _Job, result: SessionResult, now: datetime
    ) -> tuple[str, _Delta, dict[str, object]] | None:
        """What this result makes of the job: its previous status, the counter delta and the
        row's new values (the parameters of _FINAL or _RETRY)."""
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
        change: dict[str, object] = {
            "b_id": job.id,
            "b_outcome": result.outcome.value,
            "b_error": result.error[:2000] or None,
            "b_at": now,
        }
        if result.ok:
            status = "succeeded"
            delta.succeeded += 1
        else:
            spec = await self._runs.spec(job.run_id)
            retryable = result.error_class in (ErrorClass.TRANSIENT, ErrorClass.ACCOUNT)
            if retryable and job.attempt < spec.retry.max_attempts:
                status = "retry_wait"
                if result.error_class is ErrorClass.TRANSIENT:
                    change["b_at"] = now + spec.retry.wait_before(job.attempt + 1)
                delta.retrying += 1
            elif retryable:
                status = "dead"
                delta.failed += 1
                delta.dead += 1
            else:
                status = "failed"
                delta.failed += 1
        # A batch may hold two results of one job (attempts): the second sees the first's decision.
        job.status = status
        change["b_status"] = status
        return previous, delta, change

    @staticmethod
    async def _count(session: AsyncSession, deltas: dict[str, _Delta], now: datetime) -> None:
        """Each run's counters, and `completed` once every planned job is final: one statement
        per run (SET sees the row as it was, hence the deltas in the condition)."""
        for run_id, delta in deltas.items():
            finished = and_(
                RunRow.status.in_([RunStatus.RUNNING, RunStatus.PAUSED]),
                RunRow.succeeded + delta.succeeded + RunRow.failed + delta.failed >= RunRow.planned,
            )
            await session.execute(
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
            )

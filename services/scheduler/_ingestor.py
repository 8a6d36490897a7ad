"""Result ingestion: a batch in one transaction, idempotent by (job id, attempt)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.types import SessionResult
from services.scheduler._credit import CreditLedger
from services.scheduler._db import Database
from services.scheduler._models import JobRow, ResultRow, RunRow
from services.scheduler._runs import RunStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stored:
    job_id: str
    attempt: int
    new: bool


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
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "detail": {
            "error": result.error,
            "target_url": result.target_url,
            "final_url": result.final_url,
            "redirect_chain": list(result.redirect_chain),
            "timing": asdict(result.timing),
            "browser_version": result.browser_version,
        },
    }


class ResultIngestor:
    """Stores results; a job's final status and its run's counters change once, whatever repeats."""

    def __init__(
        self,
        *,
        db: Database,
        ledger: CreditLedger,
        on_change: Callable[[set[str]], None],
    ) -> None:
        self._db = db
        self._ledger = ledger
        self._on_change = on_change

    async def ingest(self, results: Sequence[SessionResult]) -> list[Stored]:
        unique = list({(r.job_id, r.attempt): r for r in results}.values())
        if not unique:
            return []
        now = datetime.now(UTC)
        async with self._db.write() as session:
            known = {
                job_id: run_id
                for job_id, run_id in await session.execute(
                    select(JobRow.id, JobRow.run_id).where(
                        JobRow.id.in_({r.job_id for r in unique})
                    )
                )
            }
            valid = [r for r in unique if known.get(r.job_id) == r.run_id]
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
            fresh = {r.job_id: r for r in valid if (r.job_id, r.attempt) in inserted}
            transitioned: list[tuple[str, str, str]] = []
            if fresh:
                # The first final result of a job decides it, whichever attempt it came from.
                status = {job_id: "succeeded" if r.ok else "failed" for job_id, r in fresh.items()}
                outcome = {job_id: r.outcome.value for job_id, r in fresh.items()}
                transitioned = [
                    (run_id, pool, new_status)
                    for run_id, pool, new_status in await session.execute(
                        update(JobRow)
                        .where(JobRow.id.in_(fresh), JobRow.status == "dispatched")
                        .values(
                            status=case(status, value=JobRow.id),
                            outcome=case(outcome, value=JobRow.id),
                            finished_at=now,
                        )
                        .returning(JobRow.run_id, JobRow.pool, JobRow.status)
                    )
                ]
            changed_runs = await self._count(session, transitioned, now)
        pools = Counter(pool for _, pool, _ in transitioned)
        for pool, count in pools.items():
            self._ledger.returned(pool, count)
        if changed_runs:
            self._on_change(changed_runs)
        return [Stored(r.job_id, r.attempt, (r.job_id, r.attempt) in inserted) for r in unique]

    @staticmethod
    async def _count(
        session: AsyncSession, transitioned: list[tuple[str, str, str]], now: datetime
    ) -> set[str]:
        succeeded = Counter(run_id for run_id, _, status in transitioned if status == "succeeded")
        failed = Counter(run_id for run_id, _, status in transitioned if status == "failed")
        run_ids = set(succeeded) | set(failed)
        for run_id in run_ids:
            done = succeeded[run_id] + failed[run_id]
            await session.execute(
                update(RunRow)
                .where(RunRow.id == run_id)
                .values(
                    succeeded=RunRow.succeeded + succeeded[run_id],
                    failed=RunRow.failed + failed[run_id],
                    in_flight=RunRow.in_flight - done,
                )
            )
        if run_ids:
            await session.execute(
                update(RunRow)
                .where(
                    RunRow.id.in_(run_ids),
                    RunRow.status.in_([RunStatus.RUNNING, RunStatus.PAUSED]),
                    RunRow.succeeded + RunRow.failed >= RunRow.planned,
                )
                .values(status=RunStatus.COMPLETED, finished_at=now)
            )
        return run_ids

"""Runs: create, start, read (O(1): counters are kept incrementally), list, stats, results."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update

from services.common.errors import FailedPrecondition, NotFound
from services.common.spec import RunSpec
from services.scheduler._db import Database
from services.scheduler._models import JobRow, ResultRow, RunRow


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

    @classmethod
    def from_row(cls, row: RunRow, *, spec: RunSpec | None = None) -> Run:
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
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CellStats:
    cell: str
    results: int
    outcomes: dict[str, int]
    success_rate: float
    duration_p50_ms: float
    duration_p95_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricStats:
    """Percentiles of one session measurement over the `count` results that reported it."""

    name: str
    p50: float
    p95: float
    p99: float
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStats:
    run_id: str
    results: int
    outcomes: dict[str, int]
    success_rate: float
    duration_p50_ms: float
    duration_p95_ms: float
    duration_max_ms: float
    cells: list[CellStats]
    metrics: list[MetricStats] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """What a cancel took back: the run, and the jobs it withdrew from each pool."""

    run: Run
    withdrawn: dict[str, int]


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values) - 1e-9)))
    return sorted_values[rank - 1]


# Stats name -> where a result's detail JSON keeps it.
METRICS: dict[str, tuple[str, ...]] = {
    "ttfb_ms": ("vitals", "ttfb_ms"),
    "fcp_ms": ("vitals", "fcp_ms"),
    "lcp_ms": ("vitals", "lcp_ms"),
    "cls": ("vitals", "cls"),
    "load_ms": ("timing", "load_ms"),
    "bytes": ("bytes_transferred",),
    "requests": ("request_count",),
}


def metric_stats(details: Iterable[Mapping[str, Any]]) -> list[MetricStats]:
    """p50/p95/p99 of each measurement over result details, in METRICS order.

    A 0 means "not measured" (a session that failed before its page answered), so only values
    above 0 count; CLS is legitimately 0, so it counts wherever the document was measured.
    """
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    for detail in details:
        vitals = detail.get("vitals") or {}
        measured = bool(vitals.get("ttfb_ms") or vitals.get("fcp_ms"))
        for name, path in METRICS.items():
            value: Any = detail
            for key in path:
                value = value.get(key) if isinstance(value, Mapping) else None
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if value > 0 or (name == "cls" and measured and value == 0):
                values[name].append(float(value))
    stats = []
    for name, found in values.items():
        if found:
            found.sort()
            stats.append(
                MetricStats(
                    name=name,
                    p50=percentile(found, 0.50),
                    p95=percentile(found, 0.95),
                    p99=percentile(found, 0.99),
                    count=len(found),
                )
            )
    return stats


# Specs kept in memory (the first cached leaves first); a spec is a few KB.
SPEC_CACHE_SIZE = 10_000


class RunStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._specs: dict[str, RunSpec] = {}

    async def create(self, spec: RunSpec, *, start: bool) -> Run:
        now = datetime.now(UTC)
        row = RunRow(
            id=uuid.uuid4().hex[:16],
            name=spec.name or "run",
            status=RunStatus.RUNNING if start else RunStatus.DRAFT,
            priority=spec.priority,
            spec=spec.to_json(),
            planned=spec.sessions,
            next_index=0,
            dispatched=0,
            succeeded=0,
            failed=0,
            retrying=0,
            in_flight=0,
            dead=0,
            cancelled=0,
            expedited_at=None,
            created_at=now,
            started_at=now if start else None,
            finished_at=None,
        )
        async with self._db.write() as session:
            session.add(row)
        return Run.from_row(row)

    async def start(self, run_id: str) -> Run:
        async with self._db.write() as session:
            row = await session.get(RunRow, run_id)
            if row is None:
                raise NotFound("run", run_id)
            if row.status == RunStatus.RUNNING:
                return Run.from_row(row)
            if row.status != RunStatus.DRAFT:
                raise FailedPrecondition(
                    f"run {run_id} is {row.status}; only a draft run can be started"
                )
            row.status = RunStatus.RUNNING
            row.started_at = datetime.now(UTC)
        return Run.from_row(row)

    async def _transition(
        self, run_id: str, allowed: tuple[RunStatus, ...], verb: str, **values: object
    ) -> Run:
        async with self._db.write() as session:
            row = await session.get(RunRow, run_id, with_for_update=True)
            if row is None:
                raise NotFound("run", run_id)
            if row.status not in allowed:
                raise FailedPrecondition(
                    f"run {run_id} is {row.status}; only a {' or '.join(allowed)} run can be {verb}"
                )
            for name, value in values.items():
                setattr(row, name, value)
        return Run.from_row(row)

    async def pause(self, run_id: str) -> Run:
        return await self._transition(
            run_id, (RunStatus.RUNNING, RunStatus.PAUSED), "paused", status=RunStatus.PAUSED
        )

    async def resume(self, run_id: str) -> Run:
        return await self._transition(
            run_id, (RunStatus.PAUSED, RunStatus.RUNNING), "resumed", status=RunStatus.RUNNING
        )

    async def expedite(self, run_id: str) -> Run:
        return await self._transition(
            run_id,
            (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.DRAFT),
            "expedited",
            expedited_at=datetime.now(UTC),
        )

    async def cancel(self, run_id: str) -> Cancelled:
        """Final at once: queued and in-flight jobs are withdrawn, results so far are kept."""
        now = datetime.now(UTC)
        async with self._db.write() as session:
            # Lock the run first: a dispatch claim in flight commits its new jobs before we look.
            row = await session.get(RunRow, run_id, with_for_update=True)
            if row is None:
                raise NotFound("run", run_id)
            if RunStatus(row.status).final:
                raise FailedPrecondition(f"run {run_id} is already {row.status}")
            withdrawn = {
                pool: count
                for pool, count in await session.execute(
                    select(JobRow.pool, func.count())
                    .where(JobRow.run_id == run_id, JobRow.status == "dispatched")
                    .group_by(JobRow.pool)
                )
            }
            await session.execute(
                update(JobRow)
                .where(JobRow.run_id == run_id, JobRow.status.in_(["dispatched", "retry_wait"]))
                .values(status="cancelled", outcome="cancelled", finished_at=now)
            )
            row.status = RunStatus.CANCELLED
            row.finished_at = now
            row.cancelled = row.planned - row.succeeded - row.failed
            row.in_flight = 0
            row.retrying = 0
        self._specs.pop(run_id, None)
        return Cancelled(run=Run.from_row(row), withdrawn=withdrawn)

    async def spec(self, run_id: str) -> RunSpec:
        """A run's spec (immutable once created), cached."""
        spec = self._specs.get(run_id)
        return spec if spec is not None else (await self.get(run_id)).spec

    async def get(self, run_id: str) -> Run:
        async with self._db.read() as session:
            row = await session.get(RunRow, run_id)
            if row is None:
                raise NotFound("run", run_id)
            return self._with_cached_spec(row)

    async def list_runs(self, *, limit: int) -> list[Run]:
        async with self._db.read() as session:
            rows = await session.scalars(
                select(RunRow).order_by(RunRow.created_at.desc()).limit(limit)
            )
            return [Run.from_row(row) for row in rows]

    async def running(self) -> list[Run]:
        """Runs that may still dispatch, highest priority first, then oldest."""
        async with self._db.read() as session:
            rows = await session.scalars(
                select(RunRow)
                .where(RunRow.status == RunStatus.RUNNING)
                .order_by(RunRow.priority.desc(), RunRow.created_at)
            )
            return [self._with_cached_spec(row) for row in rows]

    def _with_cached_spec(self, row: RunRow) -> Run:
        """Validating a stored spec is the costly part of a read; specs never change, so keep them."""
        spec = self._specs.get(row.id)
        if spec is None:
            run = Run.from_row(row)
            self._specs[row.id] = run.spec
            while len(self._specs) > SPEC_CACHE_SIZE:
                self._specs.pop(next(iter(self._specs)))
            return run
        return Run.from_row(row, spec=spec)

    async def jobs(self, run_id: str, *, status: str, limit: int) -> list[JobRow]:
        await self.get(run_id)
        statement = select(JobRow).where(JobRow.run_id == run_id)
        if status:
            statement = statement.where(JobRow.status == status)
        async with self._db.read() as session:
            return list(await session.scalars(statement.order_by(JobRow.index).limit(limit)))

    async def complete_finished(self, run_ids: list[str] | None = None) -> list[str]:
        """Mark running/paused runs whose every planned job is final as completed."""
        statement = (
            update(RunRow)
            .where(
                RunRow.status.in_([RunStatus.RUNNING, RunStatus.PAUSED]),
                RunRow.succeeded + RunRow.failed >= RunRow.planned,
            )
            .values(status=RunStatus.COMPLETED, finished_at=datetime.now(UTC))
            .returning(RunRow.id)
        )
        if run_ids is not None:
            statement = statement.where(RunRow.id.in_(run_ids))
        async with self._db.write() as session:
            return list((await session.scalars(statement)).all())

    async def stats(self, run_id: str) -> RunStats:
        await self.get(run_id)
        async with self._db.read() as session:
            counts = await session.execute(
                select(ResultRow.outcome, func.count())
                .where(ResultRow.run_id == run_id)
                .group_by(ResultRow.outcome)
            )
            outcomes = {outcome: count for outcome, count in counts}
            durations = list(
                await session.scalars(
                    select(ResultRow.duration_ms)
                    .where(ResultRow.run_id == run_id)
                    .order_by(ResultRow.duration_ms)
                )
            )
            by_cell: dict[str, dict[str, int]] = {}
            for cell, outcome, count in await session.execute(
                select(ResultRow.cell_key, ResultRow.outcome, func.count())
                .where(ResultRow.run_id == run_id)
                .group_by(ResultRow.cell_key, ResultRow.outcome)
            ):
                by_cell.setdefault(cell, {})[outcome] = count
            cell_durations: dict[str, list[float]] = {cell: [] for cell in by_cell}
            if len(by_cell) > 1:
                for cell, value in await session.execute(
                    select(ResultRow.cell_key, ResultRow.duration_ms)
                    .where(ResultRow.run_id == run_id)
                    .order_by(ResultRow.duration_ms)
                ):
                    cell_durations[cell].append(value)
            else:
                cell_durations = {cell: durations for cell in by_cell}
            metrics = metric_stats(
                await session.scalars(select(ResultRow.detail).where(ResultRow.run_id == run_id))
            )
        total = sum(outcomes.values())
        cells = [
            CellStats(
                cell=cell,
                results=sum(counts.values()),
                outcomes=counts,
                success_rate=counts.get("ok", 0) / sum(counts.values()),
                duration_p50_ms=percentile(cell_durations[cell], 0.50),
                duration_p95_ms=percentile(cell_durations[cell], 0.95),
            )
            for cell, counts in sorted(by_cell.items())
        ]
        return RunStats(
            run_id=run_id,
            results=total,
            outcomes=outcomes,
            success_rate=(outcomes.get("ok", 0) / total) if total else 0.0,
            duration_p50_ms=percentile(durations, 0.50),
            duration_p95_ms=percentile(durations, 0.95),
            duration_max_ms=durations[-1] if durations else 0.0,
            cells=cells,
            metrics=metrics,
        )

    async def results(self, run_id: str, *, after: int, limit: int) -> tuple[list[ResultRow], int]:
        await self.get(run_id)
        async with self._db.read() as session:
            rows = list(
                await session.scalars(
                    select(ResultRow)
                    .where(ResultRow.run_id == run_id, ResultRow.seq > after)
                    .order_by(ResultRow.seq)
                    .limit(limit + 1)
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].seq if more and rows else 0)

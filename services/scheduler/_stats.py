"""Stored results: pages of them, and a run's statistics (outcomes, percentiles by cell)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from services.scheduler._db import Database
from services.scheduler._models import ResultRow
from services.scheduler._runs import RunStore


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


class ResultStore:
    """Reads of the results the job store wrote."""

    def __init__(self, db: Database, runs: RunStore) -> None:
        self._db = db
        self._runs = runs

    async def stats(self, run_id: str) -> RunStats:
        await self._runs.get(run_id)
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

    async def results(
        self,
        run_id: str,
        *,
        after: int,
        limit: int,
        outcomes: Sequence[str] = (),
        cell: str = "",
    ) -> tuple[list[ResultRow], int | None]:
        """Results in the order they were stored, after storage sequence `after`; the second
        value is where the next page starts (None on the last page)."""
        await self._runs.get(run_id)
        statement = select(ResultRow).where(ResultRow.run_id == run_id, ResultRow.seq > after)
        if outcomes:
            statement = statement.where(ResultRow.outcome.in_(list(outcomes)))
        if cell:
            statement = statement.where(ResultRow.cell_key == cell)
        async with self._db.read() as session:
            rows = list(await session.scalars(statement.order_by(ResultRow.seq).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].seq if more and rows else None)

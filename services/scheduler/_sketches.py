"""Run statistics kept as results arrive: DDSketch quantiles per run, per cell, per metric.

Reading a run's percentiles costs the same whatever its size: each (cell, metric) keeps a
DDSketch store (bins of 1 % relative width, from the `ddsketch` package), an exact count,
sum, min and max, and each cell keeps its outcome counts. Cells merge on read.

Quantiles follow the nearest-rank rule of `_runs.percentile`: the estimate is within 1 % of
the exact nearest-rank value (zeros, the minimum and the maximum are exact).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from services.common.thresholds import METRIC_NAMES, CellSelector, Figures
from services.common.types import Cell, NavigationTiming, WebVitals
from services.scheduler._metric_sketch import CellSketches, MetricSketch
from services.scheduler._sketch_codec import decode, encode

_INF = math.inf
_CACHE_SIZE = 256
_METRIC_INDEX = {name: index for index, name in enumerate(METRIC_NAMES)}


class ResultLike(Protocol):
    """The fields of a session result the statistics read (`SessionResult` has them)."""

    @property
    def outcome(self) -> str: ...
    @property
    def duration_ms(self) -> float: ...
    @property
    def cell(self) -> Cell: ...
    @property
    def vitals(self) -> WebVitals: ...
    @property
    def timing(self) -> NavigationTiming: ...
    @property
    def bytes_transferred(self) -> int: ...
    @property
    def request_count(self) -> int: ...


CellArg = Cell | CellSelector | None


class RunSketches:
    """A run's statistics, O(1) per result added and per figure read.

    Implements the `Figures` protocol of `services.common.thresholds`, so thresholds evaluate
    against it directly. `cell` arguments take a `Cell` (that cell), a `CellSelector` (every
    cell it matches, merged) or None (the whole run).
    """

    __slots__ = ("_cache", "_cells", "_version")

    def __init__(self) -> None:
        self._cells: dict[Cell, CellSketches] = {}
        self._version = 0
        self._cache: dict[tuple[CellArg, int], tuple[int, MetricSketch]] = {}

    # ------------------------------------------------------------------------- writing

    def add(self, result: ResultLike) -> None:
        """Count one stored result (the ingest path calls this for every result)."""
        cell = self._cells.get(result.cell)
        if cell is None:
            cell = self._cells[result.cell] = CellSketches()
        self._version += 1
        outcomes, outcome = cell.outcomes, result.outcome
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        duration, ttfb, fcp, lcp, cls, load, size, requests = cell.metrics
        # Every result has a duration (0 if it never started); the rest count where measured:
        # 0 is "not measured", except CLS, which is 0 on a stable page that did load.
        value: float = result.duration_ms
        duration.add(value if 0.0 < value < _INF else 0.0)
        vitals = result.vitals
        measured_ttfb, measured_fcp = vitals.ttfb_ms, vitals.fcp_ms
        if 0.0 < measured_ttfb < _INF:
            ttfb.add(measured_ttfb)
        if 0.0 < measured_fcp < _INF:
            fcp.add(measured_fcp)
        value = vitals.lcp_ms
        if 0.0 < value < _INF:
            lcp.add(value)
        value = vitals.cls
        if 0.0 < value < _INF or (value == 0.0 and (measured_ttfb or measured_fcp)):
            cls.add(value)
        value = result.timing.load_ms
        if 0.0 < value < _INF:
            load.add(value)
        value = result.bytes_transferred
        if 0 < value < _INF:
            size.add(value)
        value = result.request_count
        if 0 < value < _INF:
            requests.add(value)

    def add_all(self, results: Iterable[ResultLike]) -> None:
        for result in results:
            self.add(result)

    def merge(self, other: RunSketches) -> None:
        """Fold another run's (or another partition's) figures into these."""
        for key, theirs in other._cells.items():
            mine = self._cells.get(key)
            if mine is None:
                mine = self._cells[key] = CellSketches()
            mine.merge(theirs)
        self._version += 1

    # ------------------------------------------------------------------------- reading

    def cells(self) -> tuple[Cell, ...]:
        return tuple(self._cells)

    def _selected(self, cell: CellArg) -> list[CellSketches]:
        if cell is None:
            return list(self._cells.values())
        if isinstance(cell, Cell):
            found = self._cells.get(cell)
            return [found] if found is not None else []
        return [sketches for key, sketches in self._cells.items() if cell.matches(key)]

    def _metric(self, metric: str, cell: CellArg) -> MetricSketch:
        index = _METRIC_INDEX.get(metric)
        if index is None:
            raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRIC_NAMES)}")
        selected = self._selected(cell)
        if len(selected) == 1:
            return selected[0].metrics[index]
        cached = self._cache.get((cell, index))
        if cached is not None and cached[0] == self._version:
            return cached[1]
        merged = MetricSketch()
        for sketches in selected:
            merged.merge(sketches.metrics[index])
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[(cell, index)] = (self._version, merged)
        return merged

    def outcomes(self, *, cell: CellArg = None) -> dict[str, int]:
        """Results by outcome (all of the run, one cell, or the cells a selector matches)."""
        counts: dict[str, int] = {}
        for sketches in self._selected(cell):
            for outcome, count in sketches.outcomes.items():
                counts[str(outcome)] = counts.get(str(outcome), 0) + count
        return counts

    def results(self, *, cell: CellArg = None) -> int:
        return sum(sum(s.outcomes.values()) for s in self._selected(cell))

    def count(self, metric: str, *, cell: CellArg = None) -> int:
        """How many results measured `metric`."""
        return self._metric(metric, cell).count

    def quantile(self, metric: str, q: float, *, cell: CellArg = None) -> float | None:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"a quantile is between 0 and 1, got {q}")
        return self._metric(metric, cell).quantile(q)

    def mean(self, metric: str, *, cell: CellArg = None) -> float | None:
        return self._metric(metric, cell).mean

    def min(self, metric: str, *, cell: CellArg = None) -> float | None:
        sketch = self._metric(metric, cell)
        return sketch.lo if sketch.count else None

    def max(self, metric: str, *, cell: CellArg = None) -> float | None:
        sketch = self._metric(metric, cell)
        return sketch.hi if sketch.count else None

    # ------------------------------------------------------------------------- storage

    def to_bytes(self) -> bytes:
        """Compact, versioned bytes for the run's sketch column (see `_sketch_codec`)."""
        return encode(self._cells)

    @classmethod
    def from_bytes(cls, data: bytes) -> RunSketches:
        """Read `to_bytes`; raise SketchFormatError (a ValueError) on anything else."""
        sketches = cls()
        sketches._cells = decode(data)
        return sketches


if TYPE_CHECKING:
    # mypy proves here that thresholds can evaluate against a run's sketches.
    _figures: Figures = RunSketches()

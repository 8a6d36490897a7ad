"""One metric's DDSketch (1 % relative accuracy) and one matrix cell's figures."""

from __future__ import annotations

import math

from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

from services.common.thresholds import METRIC_NAMES

RELATIVE_ACCURACY = 0.01
MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
# LogarithmicMapping.key(v) is ceil(log2(v) / log2(gamma)); computing it inline is ~5x cheaper
# than the method (two calls and log(v, 2)); the bins agree up to float rounding at an edge,
# where either neighbour is still within the accuracy.
_MULTIPLIER = 1 / math.log2(MAPPING.gamma)
# Positive values outside [_LOWEST, _HIGHEST] share the edge bins, which bounds a store to
# ~2,500 bins whatever a node reports; min and max stay exact.
_LOWEST, _HIGHEST = 1e-9, 1e13
_LOWEST_KEY = math.ceil(math.log2(_LOWEST) * _MULTIPLIER)
_HIGHEST_KEY = math.ceil(math.log2(_HIGHEST) * _MULTIPLIER)
_INF = math.inf

_ceil, _log2 = math.ceil, math.log2


class MetricSketch:
    """One metric's values: a DDSketch store of the positive ones, zeros apart, exact moments."""

    __slots__ = ("count", "hi", "lo", "store", "total", "zeros")

    def __init__(self) -> None:
        self.store = DenseStore()
        self.zeros = 0
        self.count = 0
        self.total = 0.0
        self.lo = _INF
        self.hi = -_INF

    def add(self, value: float) -> None:
        """Add one value >= 0 (callers filter what was not measured)."""
        self.count += 1
        self.total += value
        if value < self.lo:
            self.lo = value
        if value > self.hi:
            self.hi = value
        if value > 0.0:
            if value < _LOWEST:
                self.store.add(_LOWEST_KEY)
            elif value > _HIGHEST:
                self.store.add(_HIGHEST_KEY)
            else:
                self.store.add(_ceil(_log2(value) * _MULTIPLIER))
        else:
            self.zeros += 1

    def merge(self, other: MetricSketch) -> None:
        if other.count == 0:
            return
        self.store.merge(other.store)
        self.zeros += other.zeros
        self.count += other.count
        self.total += other.total
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)

    def copy(self) -> MetricSketch:
        clone = MetricSketch()
        clone.merge(self)
        return clone

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile (0 <= q <= 1) within 1 %, None when empty."""
        n = self.count
        if n == 0:
            return None
        rank = max(1, min(n, math.ceil(q * n - 1e-9)))
        if rank == n:
            return self.hi
        if rank == 1:
            return self.lo
        if rank <= self.zeros:
            return 0.0
        key = self.store.key_at_rank(rank - 1 - self.zeros)
        return min(max(MAPPING.value(key), self.lo), self.hi)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class CellSketches:
    """One matrix cell of a run: outcome counts and a sketch per metric (METRIC_NAMES order)."""

    __slots__ = ("metrics", "outcomes")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.metrics = tuple(MetricSketch() for _ in METRIC_NAMES)

    def merge(self, other: CellSketches) -> None:
        for outcome, count in other.outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + count
        for mine, theirs in zip(self.metrics, other.metrics, strict=True):
            mine.merge(theirs)

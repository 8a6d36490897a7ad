"""The matrix side of a run plan: which cell job i runs in, exact and interleaved.

Allocation is largest-remainder over the cells' exact weights, so 1,000 sessions at 70/30 are
700/300. Order is the ideal-position method: the k-th session of a cell with n sessions (of N)
sits at (k + 1/2)·N/n, sessions are ordered by that position and ties by cell order. Job i's cell
is found by binary search on how many positions lie below a bound, in integers, so a run of
any size needs O(cells) memory and O(groups·log N) time per lookup, where a group is the cells
sharing one count (often just two: floor and floor + 1 of one quota).

Prefix guarantee: at the ideal position v of any job, every cell has run within 1/2 of v·share.
Against the prefix length k that gives |count - k·share| <= 1/2 + share·(C - 2)/2 for C cells:
within 1/2 for two cells, within 1 for three. More cells can be off by more (one cell of 9 and
nine of 1 in 18 start with five of the big cell, 2.5 above its share); ±1 for every prefix of any
matrix needs a sequential method (Tijdeman's), which cannot answer job i on its own.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from services.common.spec import RunSpec
from services.common.types import Cell, Geolocation

# One dimension: hashable entries (the Cell fields they set) with their weights.
_Entry = tuple[tuple[str, Any], ...]
_Dimension = tuple[tuple[_Entry, float], ...]


@dataclass(frozen=True, slots=True)
class _Group:
    """Cells that share one session count; their positions coincide, so ties go by cell order."""

    count: int
    cells: tuple[int, ...]

    def below(self, bound: int, sessions: int) -> int:
        """Sessions of one cell of the group whose ideal position is < bound."""
        # (2k + 1)·N < 2·bound·n  <=>  k < (2·bound·n - N) / 2N; count k >= 0 below that.
        above = -((sessions - 2 * bound * self.count) // (2 * sessions))
        return min(self.count, max(0, above))


@dataclass(frozen=True, slots=True)
class _Bucket:
    """The jobs whose ideal positions fall in [bound, bound + 1): cell indexes, in job order."""

    bound: int
    start: int
    cells: tuple[int, ...]


@dataclass(slots=True)
class _Allocation:
    cells: tuple[Cell, ...]
    counts: tuple[int, ...]
    groups: tuple[_Group, ...]
    # The last bucket looked up, kept with the (cached) allocation because dispatch reads jobs
    # in order and builds a new plan every tick; replaced whole, never mutated.
    last: _Bucket = _Bucket(-1, 0, ())


def integer_weights(weights: Sequence[float]) -> list[int]:
    """Float weights as integers over one power-of-two denominator: exact, no rounding."""
    ratios = [float(weight).as_integer_ratio() for weight in weights]
    denominator = max(den for _, den in ratios)
    return [num * (denominator // den) for num, den in ratios]


def _dimensions(spec: RunSpec) -> tuple[_Dimension, ...]:
    """The four dimensions; an empty one contributes a single default entry."""
    matrix = spec.matrix
    devices = tuple(((("device", d.name),), d.weight) for d in matrix.devices)
    locales = tuple(
        (
            (
                ("locale", entry.locale),
                ("timezone", entry.timezone),
                ("geolocation", _geolocation(entry.geolocation)),
            ),
            entry.weight,
        )
        for entry in matrix.locales
    )
    engines = tuple(((("engine", e.engine),), e.weight) for e in matrix.engines)
    labels = tuple(
        ((("labels", tuple(sorted(e.labels.items()))),), e.weight) for e in matrix.labels
    )
    default: _Dimension = (((), 1.0),)
    return (
        devices or default,
        locales or default,
        engines or (((("engine", spec.engine),), 1.0),),
        labels or default,
    )


def _geolocation(value: Any) -> Geolocation | None:
    if value is None:
        return None
    return Geolocation(latitude=value.latitude, longitude=value.longitude, accuracy=value.accuracy)


@lru_cache(maxsize=16)
def _allocate(dimensions: tuple[_Dimension, ...], sessions: int) -> _Allocation:
    """Cells in product order and their exact largest-remainder counts (cached: plans are
    rebuilt on every dispatch tick)."""
    weights = [integer_weights([weight for _, weight in dim]) for dim in dimensions]
    total = 1
    for dim_weights in weights:
        total *= sum(dim_weights)
    cells: list[Cell] = []
    floors: list[int] = []
    remainders: list[int] = []
    for combination in itertools.product(*(range(len(dim)) for dim in dimensions)):
        fields: dict[str, Any] = {}
        weight = 1
        for dim, dim_weights, position in zip(dimensions, weights, combination, strict=True):
            fields.update(dim[position][0])
            weight *= dim_weights[position]
        cells.append(Cell(**fields))
        quota, remainder = divmod(sessions * weight, total)
        floors.append(quota)
        remainders.append(remainder)
    # The seats left after the floors go to the largest remainders; ties go by cell order.
    left = sessions - sum(floors)
    for index in sorted(range(len(cells)), key=lambda c: (-remainders[c], c))[:left]:
        floors[index] += 1
    by_count: dict[int, list[int]] = {}
    for index, count in enumerate(floors):
        if count:
            by_count.setdefault(count, []).append(index)
    groups = tuple(_Group(count, tuple(members)) for count, members in sorted(by_count.items()))
    return _Allocation(tuple(cells), tuple(floors), groups)


class MatrixPlan:
    """Which matrix cell each job of a run uses: a pure function of the spec."""

    def __init__(self, spec: RunSpec) -> None:
        self._sessions = spec.sessions
        self._allocation = _allocate(_dimensions(spec), spec.sessions)

    @property
    def cells(self) -> tuple[Cell, ...]:
        """Every cell of the product, in cell order (some may get no sessions)."""
        return self._allocation.cells

    def counts(self) -> list[tuple[Cell, int]]:
        """Each cell with its exact number of sessions; the counts add up to `sessions`."""
        return list(zip(self._allocation.cells, self._allocation.counts, strict=True))

    def cell_of(self, index: int) -> Cell:
        """The cell of job `index`."""
        return self._allocation.cells[self.cell_index(index)]

    def cell_index(self, index: int) -> int:
        """The position in `cells` of job `index`'s cell."""
        if not 0 <= index < self._sessions:
            raise IndexError(f"job index {index} outside 0..{self._sessions - 1}")
        bucket = self._allocation.last
        offset = index - bucket.start
        if not 0 <= offset < len(bucket.cells):
            low = bucket.bound + 1 if offset >= len(bucket.cells) else 0
            bucket = self._bucket(self._bound_of(index, low))
            self._allocation.last = bucket
            offset = index - bucket.start
        return bucket.cells[offset]

    def _below(self, bound: int) -> int:
        """How many sessions have an ideal position < bound."""
        sessions = self._sessions
        return sum(len(g.cells) * g.below(bound, sessions) for g in self._allocation.groups)

    def _bound_of(self, index: int, low: int) -> int:
        """The integer p with job `index`'s ideal position in [p, p + 1)."""
        # Largest p with _below(p) <= index; _below(0) == 0 and every position is < N.
        high = self._sessions - 1
        low = min(low, high)
        while low < high:
            middle = (low + high + 1) // 2
            if self._below(middle) <= index:
                low = middle
            else:
                high = middle - 1
        return low

    def _bucket(self, bound: int) -> _Bucket:
        """Order the sessions whose ideal positions fall in [bound, bound + 1)."""
        sessions = self._sessions
        # A cell's positions are N/n >= 1 apart, so each group has at most one in the interval.
        at: dict[Fraction, list[tuple[int, ...]]] = {}
        for group in self._allocation.groups:
            k = group.below(bound, sessions)
            if k < group.count and (2 * k + 1) * sessions < 2 * (bound + 1) * group.count:
                at.setdefault(Fraction((2 * k + 1) * sessions, 2 * group.count), []).append(
                    group.cells
                )
        cells = tuple(cell for position in sorted(at) for cell in heapq.merge(*at[position]))
        return _Bucket(bound, self._below(bound), cells)

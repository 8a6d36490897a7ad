"""Credit-based dispatch arithmetic: what may still be published to each pool."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping


class CreditLedger:
    """Outstanding jobs per pool (published, not yet reported final) against live capacity.

    credit(pool) = capacity(pool) - outstanding(pool), never below zero. Jobs wait in the
    scheduler, where priority, pacing and cancellation are exact, instead of in the bus.
    """

    def __init__(self) -> None:
        self._outstanding: dict[str, int] = defaultdict(int)

    def reset(self, outstanding: Mapping[str, int]) -> None:
        self._outstanding = defaultdict(int, outstanding)

    def outstanding(self, pool: str) -> int:
        return self._outstanding[pool]

    def credit(self, pool: str, capacity: int) -> int:
        return max(0, capacity - self._outstanding[pool])

    def took(self, pool: str, count: int) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self._outstanding[pool] += count

    def returned(self, pool: str, count: int) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self._outstanding[pool] = max(0, self._outstanding[pool] - count)

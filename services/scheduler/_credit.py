"""Credit-based dispatch arithmetic: what may still be published to each pool."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from services.scheduler._events import JobsDispatched, JobsReleased


class CreditLedger:
    """Outstanding jobs (published, not yet reported final) per pool and per (run, pool).

    credit(pool) = capacity(pool) - outstanding(pool), never below zero. Jobs wait in the
    scheduler, where priority, pacing and cancellation are exact, instead of in the bus.
    """

    def __init__(self) -> None:
        self._by_run: Counter[tuple[str, str]] = Counter()
        self._by_pool: Counter[str] = Counter()

    def follow(self, event: JobsDispatched | JobsReleased) -> None:
        """Jobs claimed take credit, jobs reported, recovered or withdrawn give it back: the
        ledger follows the job store's events, published as the changes commit."""
        if isinstance(event, JobsDispatched):
            for pool, count in event.by_pool.items():
                self.took(pool, count, run_id=event.run_id)
        else:
            for (run_id, pool), count in event.by_run_pool.items():
                self.returned(pool, count, run_id=run_id)

    def reset(self, outstanding: Iterable[tuple[str, str, int]]) -> None:
        """From (run_id, pool, count) rows, e.g. the jobs still dispatched after a restart."""
        self._by_run = Counter({(run_id, pool): count for run_id, pool, count in outstanding})
        self._by_pool = Counter()
        for (_, pool), count in self._by_run.items():
            self._by_pool[pool] += count

    def outstanding(self, pool: str) -> int:
        return self._by_pool[pool]

    def run_outstanding(self, run_id: str, pool: str) -> int:
        return self._by_run[(run_id, pool)]

    def credit(self, pool: str, capacity: int) -> int:
        return max(0, capacity - self._by_pool[pool])

    def took(self, pool: str, count: int, *, run_id: str = "") -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self._by_pool[pool] += count
        self._by_run[(run_id, pool)] += count

    def returned(self, pool: str, count: int, *, run_id: str = "") -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        given_back = min(count, self._by_run[(run_id, pool)])
        self._by_run[(run_id, pool)] -= given_back
        if self._by_run[(run_id, pool)] <= 0:
            del self._by_run[(run_id, pool)]
        self._by_pool[pool] = max(0, self._by_pool[pool] - given_back)

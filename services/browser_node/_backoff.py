"""Exponential backoff with full jitter for retrying calls to the scheduler and the bus."""

from __future__ import annotations

import random
from datetime import timedelta


class Backoff:
    """Delays growing from `initial` to `maximum`; `reset()` after a success."""

    def __init__(
        self,
        *,
        initial: timedelta = timedelta(milliseconds=200),
        maximum: timedelta = timedelta(seconds=10),
        factor: float = 2.0,
    ) -> None:
        if initial <= timedelta() or maximum < initial or factor < 1.0:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self._initial = initial
        self._maximum = maximum
        self._factor = factor
        self.failures = 0

    def next(self) -> timedelta:
        """The delay before the next attempt; full jitter so many nodes don't retry in step."""
        ceiling = min(
            self._maximum.total_seconds(),
            self._initial.total_seconds() * self._factor**self.failures,
        )
        self.failures += 1
        floor = self._initial.total_seconds() / 2
        return timedelta(seconds=random.uniform(floor, max(floor, ceiling)))

    def reset(self) -> None:
        self.failures = 0

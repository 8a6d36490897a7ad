"""A background job that runs every so often: one task, start/stop, errors logged, a timeout.

Sweeps, retention, memory checks and heartbeats are all "call this every N seconds, forever,
and never let one bad round end the loop"; this is that loop, written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

logger = logging.getLogger(__name__)


class RecurringTask:
    """Calls `job()` every `interval` (the wait starts after a round ends) until stopped.

    A round that raises is logged and the next one comes as usual; a round that runs longer
    than `timeout` is cancelled and logged. `run_first` runs a round at start instead of
    waiting an interval first. `stop()` is idempotent and waits for the task to end.
    """

    def __init__(
        self,
        name: str,
        job: Callable[[], Awaitable[object]],
        *,
        interval: timedelta,
        timeout: timedelta | None = None,
        run_first: bool = False,
    ) -> None:
        if interval <= timedelta(0):
            raise ValueError(f"{name}: interval must be positive")
        self.name = name
        self._job = job
        self._interval = interval.total_seconds()
        self._timeout = (timeout or max(interval * 10, timedelta(seconds=30))).total_seconds()
        self._run_first = run_first
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    def trigger(self) -> None:
        """Run the next round now instead of at the end of the current wait."""
        self._now.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def round(self) -> bool:
        """One round now, bounded and logged; True when it succeeded."""
        try:
            await asyncio.wait_for(self._job(), self._timeout)
        except TimeoutError:
            logger.warning("%s: a round ran over %.0fs and was cancelled", self.name, self._timeout)
        except Exception:
            logger.exception("%s: a round failed; the next one comes as usual", self.name)
        else:
            return True
        return False

    async def _loop(self) -> None:
        if self._run_first:
            await self.round()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), self._interval)
            self._now.clear()
            await self.round()

"""GetRun at the edge: run snapshots kept by the gateway, never older than a configured bound.

What a caller of `GetRun` through a gateway can rely on:

- The answer reflects the scheduler's state as of at most `staleness` before the call (default
  250 ms). Final runs (completed, cancelled, failed) never change again: they are kept until
  the least recently read ones are evicted (`capacity` runs in all).
- A write through this gateway (CreateRun, StartRun, PauseRun, ...) drops the run's snapshot,
  so a client reads its own writes; writes through another gateway show within the bound.
- Errors (NOT_FOUND, UNAVAILABLE, ...) are never kept: a call after a failed read asks again.

How: concurrent reads of one run share one upstream GetRun (single flight); once a snapshot is
half the bound old, the read that sees it starts one background refresh, so readers of a busy
run rarely wait for the scheduler; runs the gateway follows for WatchRun are refreshed by their
progress stream too. Authentication stays per call: the interceptor runs before any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import grpc

from services.gateway._fanout import UpstreamError
from smartfleet.v1 import runs_pb2

logger = logging.getLogger(__name__)

FINAL = frozenset(
    {runs_pb2.RUN_STATUS_COMPLETED, runs_pb2.RUN_STATUS_CANCELLED, runs_pb2.RUN_STATUS_FAILED}
)
# A progress-stream snapshot counts as read this long before it arrived: it covers the trip
# from the scheduler's read to here, and keeps a snapshot read before a write (still on its
# way when the write's reply came back) from passing for a newer one.
FEED_LAG = timedelta(milliseconds=100)

Fetch = Callable[[str, float], Awaitable[runs_pb2.Run]]


@dataclass(slots=True)
class _Entry:
    run: runs_pb2.Run | None  # None: only a watermark after a write; the next read fetches
    as_of: float  # the state is at least this new (monotonic seconds)

    @property
    def final(self) -> bool:
        return self.run is not None and self.run.status in FINAL


@dataclass(slots=True, eq=False)
class _Flight:
    started: float
    task: asyncio.Task[runs_pb2.Run] | None = None
    superseded: bool = False  # a write came after it began: its answer is not kept


class RunSnapshotCache:
    """Answers GetRun from snapshots at most `staleness` old; see the module docstring."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        staleness: timedelta,
        capacity: int,
        upstream_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("the run snapshot cache needs a capacity of at least 1")
        self._fetch = fetch
        self._bound = staleness.total_seconds()
        self._capacity = capacity
        self._upstream_timeout = upstream_timeout
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._flights: dict[str, _Flight] = {}

    @property
    def enabled(self) -> bool:
        return self._bound > 0

    async def get(self, run_id: str, *, timeout: float) -> runs_pb2.Run:
        if not self.enabled:
            return await self._fetch(run_id, timeout)
        now = self._clock()
        entry = self._entries.get(run_id)
        if entry is not None and entry.run is not None:
            age = now - entry.as_of
            if entry.final or age <= self._bound:
                self._entries.move_to_end(run_id)
                if not entry.final and age > self._bound / 2:
                    self._flight(run_id, now)  # refresh ahead, in the background
                return entry.run
        task = self._flight(run_id, now).task
        assert task is not None
        try:
            # Shielded: a caller that gives up does not cancel the read the others wait for.
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise UpstreamError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the scheduler did not answer in time"
            ) from None

    def offer(self, run: runs_pb2.Run) -> None:
        """A snapshot from a WatchRun progress stream, kept if it is the newest we know."""
        if self.enabled and run.id:
            self._store(run.id, run, as_of=self._clock() - FEED_LAG.total_seconds())

    def invalidate(self, run_id: str) -> None:
        """After a write to the run: reads from now on see the scheduler's state after it."""
        if self.enabled and run_id:
            self._put(run_id, _Entry(None, self._clock()))
            if (flight := self._flights.pop(run_id, None)) is not None:
                flight.superseded = True

    async def close(self) -> None:
        flights = [flight.task for flight in self._flights.values() if flight.task]
        for task in flights:
            task.cancel()
        for task in flights:
            with contextlib.suppress(BaseException):
                await task
        self._flights.clear()
        self._entries.clear()

    def _flight(self, run_id: str, now: float) -> _Flight:
        """The upstream read in progress if it started recently enough, else a new one."""
        flight = self._flights.get(run_id)  # never one begun before a write: invalidate() drops it
        if flight is not None and flight.started >= now - self._bound:
            return flight
        flight = self._flights[run_id] = _Flight(now)
        flight.task = asyncio.create_task(self._read(run_id, flight), name=f"get-run-{run_id}")
        flight.task.add_done_callback(lambda done: self._landed(run_id, flight, done))
        return flight

    async def _read(self, run_id: str, flight: _Flight) -> runs_pb2.Run:
        run = await self._fetch(run_id, self._upstream_timeout)
        if not flight.superseded:
            self._store(run_id, run, as_of=flight.started)
        return run

    def _landed(self, run_id: str, flight: _Flight, task: asyncio.Task[runs_pb2.Run]) -> None:
        if self._flights.get(run_id) is flight:
            del self._flights[run_id]
        if not task.cancelled() and (error := task.exception()) is not None:
            # Waiters get the error; a background refresh that failed is only noted.
            logger.debug("reading run %s failed: %s", run_id, error)

    def _store(self, run_id: str, run: runs_pb2.Run, *, as_of: float) -> None:
        entry = self._entries.get(run_id)
        if entry is not None and (entry.final or entry.as_of > as_of):
            return  # what we hold is final, or newer
        self._put(run_id, _Entry(run, as_of))

    def _put(self, run_id: str, entry: _Entry) -> None:
        self._entries[run_id] = entry
        self._entries.move_to_end(run_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

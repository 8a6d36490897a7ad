"""Live run progress: watchers get a snapshot, then the newest state after every change (coalesced)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta

from services.scheduler._events import Event, run_ids_of
from services.scheduler._runs import Run, RunStore

logger = logging.getLogger(__name__)


class _Channel:
    def __init__(self, run: Run) -> None:
        self.latest = run
        self.version = 0
        self.watchers = 0
        self.condition = asyncio.Condition()

    async def publish(self, run: Run) -> None:
        async with self.condition:
            self.latest = run
            self.version += 1
            self.condition.notify_all()

    async def newer_than(self, version: int) -> tuple[int, Run]:
        async with self.condition:
            await self.condition.wait_for(lambda: self.version > version)
            return self.version, self.latest


class RunProgressHub:
    """One database read per changed run per interval, however many watchers it has."""

    def __init__(
        self, runs: RunStore, *, interval: timedelta = timedelta(milliseconds=100)
    ) -> None:
        self._runs = runs
        self._interval = interval.total_seconds()
        self._channels: dict[str, _Channel] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_loop(), name="run-progress")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def on_event(self, event: Event) -> None:
        """Any event about a run may change what its watchers see."""
        self.changed(run_ids_of(event))

    def changed(self, run_ids: Iterable[str]) -> None:
        watched = [run_id for run_id in run_ids if run_id in self._channels]
        if watched:
            self._dirty.update(watched)
            self._wake.set()

    async def watch(self, run_id: str) -> AsyncIterator[Run]:
        run = await self._runs.get(run_id)
        yield run
        if run.status.final:
            return
        channel = self._channels.get(run_id)
        if channel is None:
            channel = self._channels[run_id] = _Channel(run)
        channel.watchers += 1
        # A change between our read and subscribing would be missed: refresh once now.
        self.changed([run_id])
        try:
            seen = channel.version
            while True:
                seen, latest = await channel.newer_than(seen)
                if latest == run:
                    continue
                run = latest
                yield run
                if run.status.final:
                    return
        finally:
            channel.watchers -= 1
            if channel.watchers == 0:
                self._channels.pop(run_id, None)

    async def _refresh_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for run_id in dirty:
                channel = self._channels.get(run_id)
                if channel is None:
                    continue
                try:
                    await channel.publish(await self._runs.get(run_id))
                except Exception:
                    logger.exception("cannot refresh progress of run %s", run_id)
            await asyncio.sleep(self._interval)

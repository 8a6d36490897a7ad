"""WatchRun fan-out: one upstream stream per run, shared by every watcher of that run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from services.common.errors import SmartfleetError
from smartfleet.v1 import runs_pb2

logger = logging.getLogger(__name__)

# The scheduler's progress stream of a run (from the leader, whichever that is now).
WatchUpstream = Callable[[str], AsyncIterator[runs_pb2.Run]]
# A stream that breaks (the leader died, a takeover) is opened again this many times in a row
# before its watchers get the error; each new stream starts with a fresh snapshot.
RESUMES = 20
RESUME_PAUSE = 0.5


class UpstreamError(SmartfleetError):
    """An error the scheduler returned, passed on with its own status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Feed:
    def __init__(self) -> None:
        self.latest: runs_pb2.Run | None = None
        self.version = 0
        self.done = False
        self.error: UpstreamError | None = None
        self.watchers = 0
        self.condition = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None


class WatchFanout:
    """`on_snapshot` sees every update of every followed run (the GetRun cache keeps them)."""

    def __init__(
        self,
        watch: WatchUpstream,
        *,
        on_snapshot: Callable[[runs_pb2.Run], None] | None = None,
    ) -> None:
        self._upstream = watch
        self._feeds: dict[str, _Feed] = {}
        self._on_snapshot = on_snapshot

    @property
    def upstreams(self) -> int:
        return len(self._feeds)

    async def watch(self, run_id: str) -> AsyncIterator[runs_pb2.Run]:
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = _Feed()
            feed.task = asyncio.create_task(self._follow(run_id, feed), name=f"watch-{run_id}")
        feed.watchers += 1
        try:
            seen = 0

            def ready() -> bool:
                return feed.version > seen or feed.done

            while True:
                async with feed.condition:
                    await feed.condition.wait_for(ready)
                    if feed.version > seen:
                        seen, item = feed.version, feed.latest
                    elif feed.error:
                        raise feed.error
                    else:
                        return
                assert item is not None
                yield item
        finally:
            feed.watchers -= 1
            if feed.watchers == 0 and self._feeds.get(run_id) is feed:
                del self._feeds[run_id]
                if feed.task and not feed.task.done():
                    feed.task.cancel()

    async def _follow(self, run_id: str, feed: _Feed) -> None:
        try:
            await self._stream(run_id, feed)
        except grpc.aio.AioRpcError as error:
            feed.error = UpstreamError(error.code(), error.details() or "scheduler error")
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("watch of run %s failed", run_id)
            feed.error = UpstreamError(grpc.StatusCode.INTERNAL, "progress stream failed")
        # Later watchers of a finished run start a fresh feed (a snapshot, then the end).
        if self._feeds.get(run_id) is feed:
            del self._feeds[run_id]
        async with feed.condition:
            feed.done = True
            feed.condition.notify_all()

    async def _stream(self, run_id: str, feed: _Feed) -> None:
        """Follow the run; a stream the scheduler drops (UNAVAILABLE) is opened again."""
        breaks = 0
        while True:
            try:
                async for run in self._upstream(run_id):
                    breaks = 0
                    if self._on_snapshot is not None:
                        self._on_snapshot(run)
                    async with feed.condition:
                        feed.latest = run
                        feed.version += 1
                        feed.condition.notify_all()
                return
            except grpc.aio.AioRpcError as error:
                breaks += 1
                if error.code() != grpc.StatusCode.UNAVAILABLE or breaks > RESUMES:
                    raise
                logger.info("progress stream of run %s broke (%s); resuming", run_id, error.code())
                await asyncio.sleep(RESUME_PAUSE)

    async def close(self) -> None:
        for feed in list(self._feeds.values()):
            if feed.task:
                feed.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed.task
        self._feeds.clear()

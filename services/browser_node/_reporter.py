"""Batches session results into ReportResults calls and tells each caller when its result is stored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from services.browser_node._backoff import Backoff
from services.browser_node._link import SchedulerLink
from services.common.errors import SmartfleetError, Unavailable
from services.common.types import SessionResult

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class _Pending:
    result: SessionResult
    stored: asyncio.Future[bool]

    @property
    def key(self) -> tuple[str, int]:
        return (self.result.job_id, self.result.attempt)

    def resolve(self, stored: bool) -> None:
        if not self.stored.done():
            self.stored.set_result(stored)


class ResultReporter:
    """`await reporter.report(result)` returns True once the scheduler stored it.

    One call is on its way at a time, and calls leave at least `linger` apart: a result after a
    quiet spell leaves at once; under load, what finishes meanwhile rides along in the next call
    (at most `batch_size`; a full batch does not wait), so batches grow with the load and the
    scheduler stores them in few transactions. While the scheduler is unreachable the batch is
    retried with backoff; a result the scheduler answers for but does not list as stored (or
    rejects outright) returns False.
    """

    def __init__(
        self,
        *,
        link: SchedulerLink,
        batch_size: int = 256,
        linger: timedelta = timedelta(milliseconds=5),
        retry: Backoff | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._link = link
        self._batch_size = batch_size
        self._linger = linger
        self._retry = retry or Backoff(
            initial=timedelta(milliseconds=200), maximum=timedelta(seconds=5)
        )
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._sending: list[_Pending] = []
        # Set when a whole batch is queued: ends a linger early.
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Set while nothing is queued or on its way.
        self._flushed = asyncio.Event()
        self._flushed.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="result-reporter")

    async def stop(self, *, flush: timedelta = timedelta(seconds=2)) -> None:
        """Give what is queued up to `flush` to go out, then stop; unsent results return False."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flushed.wait(), flush.total_seconds())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for pending in self._sending:
            pending.resolve(False)
        while not self._queue.empty():
            self._queue.get_nowait().resolve(False)

    async def report(self, result: SessionResult) -> bool:
        """Wait until the scheduler stored `result` (True) or refused it (False)."""
        if self._task is None:
            raise Unavailable("result reporter is not running")
        pending = _Pending(result=result, stored=asyncio.get_running_loop().create_future())
        self._flushed.clear()
        self._queue.put_nowait(pending)
        if self._queue.qsize() + len(self._sending) >= self._batch_size:
            self._full.set()
        return await pending.stored

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        linger = self._linger.total_seconds()
        last_call = float("-inf")
        while True:
            self._sending = [await self._queue.get()]
            self._top_up()
            wait = last_call + linger - loop.time()
            if wait > 0 and len(self._sending) < self._batch_size:
                # One wait for the batch, not one per result.
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), wait)
                self._top_up()
            last_call = loop.time()
            await self._send()
            self._sending = []
            if self._queue.empty():
                self._flushed.set()

    def _top_up(self) -> None:
        while len(self._sending) < self._batch_size and not self._queue.empty():
            self._sending.append(self._queue.get_nowait())

    async def _send(self) -> None:
        while True:
            try:
                stored = await self._link.report_results(
                    [pending.result for pending in self._sending]
                )
            except Unavailable as error:
                if self._retry.failures == 0:
                    logger.warning(
                        "%s; keeping %d result(s) and retrying", error.message, len(self._sending)
                    )
                await asyncio.sleep(self._retry.next().total_seconds())
                # Results that finished meanwhile ride along with the retry.
                self._top_up()
                continue
            except SmartfleetError as error:
                logger.error("%s; %d result(s) not stored", error.message, len(self._sending))
                for pending in self._sending:
                    pending.resolve(False)
                return
            if self._retry.failures:
                logger.info(
                    "reported %d result(s) after the scheduler came back", len(self._sending)
                )
            self._retry.reset()
            missing = [pending.key for pending in self._sending if pending.key not in stored]
            if missing:
                logger.warning(
                    "the scheduler did not store %d result(s), e.g. %s", len(missing), missing[0]
                )
            for pending in self._sending:
                pending.resolve(pending.key in stored)
            return

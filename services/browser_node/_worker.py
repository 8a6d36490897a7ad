"""Pulls job envelopes from the pool's durable consumer and runs each in a slot.

A message is acked only after the scheduler stored its result; while a session runs the
message's ack timer is kept alive with `in_progress`; on shutdown what cannot finish is naked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.browser_node._backoff import Backoff
from services.browser_node._reporter import ResultReporter
from services.browser_node._session import SessionRunner
from services.common.bus import STREAM, pool_consumer
from services.common.contracts import envelope_from_bytes
from services.common.errors import SmartfleetError
from services.common.types import JobEnvelope, SessionResult

logger = logging.getLogger(__name__)

_NATS_TIMEOUT = 5.0
# Consecutive fetch errors before the subscription is rebuilt (nats.py issue #504).
_REBIND_AFTER_ERRORS = 3
# Empty fetches (about a second each) between checks that the subscription still receives.
_STALL_CHECK_EVERY = 30
_REMEMBER_CANCELLED_RUNS = 1024


@dataclass(slots=True, eq=False)
class _InFlight:
    envelope: JobEnvelope
    started_at: datetime
    session: asyncio.Task[SessionResult] | None = None


class JobWorker:
    """Fetches at most the free slots from the pool consumer and handles each message in a task."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        pool: str,
        runner: SessionRunner,
        reporter: ResultReporter,
        slots: int,
        shutdown_grace: timedelta,
        ready: asyncio.Event,
        fetch_timeout: timedelta = timedelta(seconds=1),
    ) -> None:
        self._js = js
        self._pool = pool
        self._consumer = pool_consumer(pool)
        self._runner = runner
        self._reporter = reporter
        self._slots = max(1, slots)
        self._grace = shutdown_grace
        self._ready = ready
        self._fetch_timeout = fetch_timeout
        self._ack_wait = timedelta(seconds=30)
        self._psub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._handlers: dict[asyncio.Task[None], _InFlight] = {}
        self._cancelled_runs: OrderedDict[str, None] = OrderedDict()
        self._accepting = True
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.bound = asyncio.Event()

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def busy(self) -> int:
        return len(self._handlers)

    @property
    def free(self) -> int:
        return max(0, self._slots - self.busy) if self._accepting else 0

    def running_longer_than(self, age: timedelta) -> tuple[str, ...]:
        """Job ids handled for at least `age` (sessions, or results waiting to be stored)."""
        since = datetime.now(UTC) - age
        return tuple(
            item.envelope.job_id for item in self._handlers.values() if item.started_at <= since
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"worker-{self._pool}"
            )

    def set_slots(self, slots: int) -> None:
        """Dynamic concurrency: takes effect at the next fetch; running sessions are not stopped."""
        if slots < 1:
            logger.warning("ignoring slots=%d (must be at least 1)", slots)
            return
        if slots != self._slots:
            logger.info("slots %d -> %d", self._slots, slots)
            self._slots = slots
            self._wake.set()

    def cancel_run(self, run_id: str) -> None:
        """Stop this run's sessions; they, and its messages still to come, report `cancelled`."""
        self._cancelled_runs[run_id] = None
        self._cancelled_runs.move_to_end(run_id)
        while len(self._cancelled_runs) > _REMEMBER_CANCELLED_RUNS:
            self._cancelled_runs.popitem(last=False)
        for item in self._handlers.values():
            if item.envelope.run_id == run_id and item.session is not None:
                item.session.cancel()

    async def drain(self) -> None:
        """Take no new jobs and wait until the running ones are done."""
        self._accepting = False
        self._wake.set()
        await self._idle.wait()

    async def stop(self) -> None:
        """Stop fetching, give in-flight sessions `shutdown_grace`, nak the rest. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        self._accepting = False
        self._stopping.set()
        self._wake.set()
        # The fetch loop notices within one fetch timeout; cancel it only if it hangs.
        try:
            await asyncio.wait_for(
                asyncio.shield(task), self._fetch_timeout.total_seconds() + _NATS_TIMEOUT
            )
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        handlers = set(self._handlers)
        if handlers:
            logger.info(
                "waiting up to %.0fs for %d session(s)", self._grace.total_seconds(), len(handlers)
            )
            _, unfinished = await asyncio.wait(handlers, timeout=self._grace.total_seconds())
            if unfinished:
                logger.warning("giving back %d unfinished job(s)", len(unfinished))
                for handler in unfinished:
                    handler.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)
        await self._unsubscribe()

    async def _run(self) -> None:
        await self._wait_or_stop(self._ready.wait())
        psub = await self._bind()
        errors = 0
        empty = 0
        backoff = Backoff(initial=timedelta(milliseconds=200), maximum=timedelta(seconds=5))
        while psub is not None and not self._stopping.is_set():
            self._wake.clear()
            free = self.free
            if free <= 0:
                await self._wait_or_stop(self._wake.wait(), timeout=self._fetch_timeout)
                continue
            try:
                messages = await psub.fetch(batch=free, timeout=self._fetch_timeout.total_seconds())
            except TimeoutError:  # nats.errors.TimeoutError too: nothing arrived
                errors = 0
                empty += 1
                if empty % _STALL_CHECK_EVERY == 0 and await self._stalled():
                    psub = await self._rebind()
                continue
            except (nats.errors.Error, OSError) as error:
                errors += 1
                logger.warning(
                    "fetch from %s failed (%d in a row): %s", self._consumer, errors, error
                )
                await self._wait_or_stop(asyncio.sleep(backoff.next().total_seconds()))
                if errors >= _REBIND_AFTER_ERRORS:
                    psub = await self._rebind()
                    errors = 0
                continue
            errors = empty = 0
            backoff.reset()
            for message in messages:
                await self._dispatch(message)

    async def _dispatch(self, message: Msg) -> None:
        if not self._accepting:
            # Fetched just as the node began draining or stopping: another node can have it now.
            await self._settle(message.nak(), "nak")
            return
        try:
            envelope = envelope_from_bytes(message.data)
        except Exception as error:
            logger.error(
                "terminating an undecodable job envelope (%d bytes): %s", len(message.data), error
            )
            await self._settle(message.term(), "term")
            return
        item = _InFlight(envelope=envelope, started_at=datetime.now(UTC))
        handler = asyncio.get_running_loop().create_task(
            self._handle(message, item), name=f"job-{envelope.job_id}:{envelope.attempt}"
        )
        self._handlers[handler] = item
        self._idle.clear()
        handler.add_done_callback(self._finished)

    def _finished(self, handler: asyncio.Task[None]) -> None:
        self._handlers.pop(handler, None)
        if not self._handlers:
            self._idle.set()
        self._wake.set()
        if not handler.cancelled() and handler.exception() is not None:
            logger.error("job handler failed", exc_info=handler.exception())

    async def _handle(self, message: Msg, item: _InFlight) -> None:
        envelope = item.envelope
        keep_alive = asyncio.get_running_loop().create_task(self._keep_alive(message))
        try:
            result = await self._run_session(item)
            try:
                stored = await self._reporter.report(result)
            except SmartfleetError as error:
                logger.warning("result of job %s not reported: %s", envelope.job_id, error.message)
                stored = False
            if stored:
                await self._settle(message.ack(), "ack")
            else:
                # The scheduler answered but did not store it: let the message come back later.
                await self._settle(message.nak(delay=self._ack_wait.total_seconds()), "nak")
        except asyncio.CancelledError:
            logger.info("giving back job %s attempt %d", envelope.job_id, envelope.attempt)
            await self._settle(message.nak(), "nak")
            raise
        finally:
            keep_alive.cancel()

    async def _run_session(self, item: _InFlight) -> SessionResult:
        envelope = item.envelope
        if envelope.run_id in self._cancelled_runs:
            return self._runner.cancelled(envelope)
        item.session = asyncio.get_running_loop().create_task(self._runner.run(envelope))
        try:
            return await item.session
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the worker is stopping: not a run cancellation
            return self._runner.cancelled(envelope, started_at=item.started_at)

    async def _keep_alive(self, message: Msg) -> None:
        interval = max(0.1, self._ack_wait.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(nats.errors.Error, OSError):
                await message.in_progress()

    async def _settle(self, call: Awaitable[object], what: str) -> None:
        try:
            await asyncio.wait_for(call, _NATS_TIMEOUT)
        except (nats.errors.Error, OSError, TimeoutError) as error:
            # JetStream redelivers after the ack wait; nothing is lost, only delayed.
            logger.warning("could not %s a message: %s", what, error)

    async def _bind(self) -> JetStreamContext.PullSubscription | None:
        """Bind to the pool's durable consumer, waiting until the scheduler created it."""
        backoff = Backoff(initial=timedelta(milliseconds=200), maximum=timedelta(seconds=5))
        waiting_logged = False
        while not self._stopping.is_set():
            try:
                info = await self._js.consumer_info(STREAM, self._consumer, timeout=_NATS_TIMEOUT)
                self._psub = await self._js.pull_subscribe_bind(
                    consumer=self._consumer, stream=STREAM
                )
            except NotFoundError:
                if not waiting_logged:
                    logger.info("waiting for the scheduler to create consumer %s", self._consumer)
                    waiting_logged = True
            except (nats.errors.Error, OSError, TimeoutError) as error:
                logger.warning("cannot bind consumer %s yet: %s", self._consumer, error)
            else:
                if info.config.ack_wait:
                    self._ack_wait = timedelta(seconds=info.config.ack_wait)
                logger.info(
                    "taking jobs from %s/%s with %d slot(s), ack wait %.0fs",
                    STREAM,
                    self._consumer,
                    self._slots,
                    self._ack_wait.total_seconds(),
                )
                self.bound.set()
                return self._psub
            await self._wait_or_stop(asyncio.sleep(backoff.next().total_seconds()))
        return None

    async def _rebind(self) -> JetStreamContext.PullSubscription | None:
        logger.warning("rebinding consumer %s", self._consumer)
        await self._unsubscribe()
        return await self._bind()

    async def _stalled(self) -> bool:
        """Messages wait but none reach us: the subscription may be dead after a server restart."""
        try:
            info = await self._js.consumer_info(STREAM, self._consumer, timeout=_NATS_TIMEOUT)
        except NotFoundError:
            return True
        except (nats.errors.Error, OSError, TimeoutError):
            return False
        return bool(info.num_pending) and self.free > 0

    async def _unsubscribe(self) -> None:
        psub, self._psub = self._psub, None
        if psub is not None:
            with contextlib.suppress(nats.errors.Error, OSError, ValueError, TimeoutError):
                await asyncio.wait_for(psub.unsubscribe(), _NATS_TIMEOUT)

    async def _wait_or_stop(
        self, waiting: Awaitable[object], *, timeout: timedelta | None = None
    ) -> None:
        """Await `waiting` but return early when the worker stops."""
        task = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait(
                {task, stop},
                timeout=timeout.total_seconds() if timeout else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for pending in (task, stop):
                pending.cancel()
            await asyncio.gather(task, stop, return_exceptions=True)

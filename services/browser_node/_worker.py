"""Pulls job envelopes from the durable consumers of the node's pools and runs each in a slot.

A node serves its engine's plain pool and the pool of every subset of its labels (`chromium`,
`chromium.region_eu`); all of them share the node's slots. A message is acked only after the
scheduler stored its result; while a session runs the message's ack timer is kept alive with
`in_progress`; on shutdown what cannot finish is naked.

Fetching: a pool whose last fetch brought messages is asked for a share of the free slots
(rotating which pool comes first) with a short timeout; every other pool holds a lingering
fetch of one message, so work arriving anywhere is seen at once. What arrives beyond the free
slots is naked at once (no delay) for another node or a later fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.browser_node._backoff import Backoff
from services.browser_node._reporter import ResultReporter
from services.common.bus import STREAM, pool_consumer
from services.common.contracts import envelope_from_bytes
from services.common.errors import SmartfleetError
from services.common.types import JobEnvelope, SessionResult

logger = logging.getLogger(__name__)

_NATS_TIMEOUT = 5.0
# How long a pool that just had messages is asked before it counts as empty again: its fetch
# answers at once while it has work, and holds the slots it asked for only this long if not.
_BUSY_FETCH_TIMEOUT = timedelta(milliseconds=100)
# Consecutive fetch errors of a pool before its subscription is rebuilt (nats.py issue #504).
_REBIND_AFTER_ERRORS = 3
# Empty fetches of a pool between checks that its subscription still receives.
_STALL_CHECK_EVERY = 30
_REMEMBER_CANCELLED_RUNS = 1024


class Runner(Protocol):
    """What the worker needs of a session runner (`SessionRunner`, or the benchmark's `NoopRunner`)."""

    async def run(self, envelope: JobEnvelope) -> SessionResult: ...

    def cancelled(
        self, envelope: JobEnvelope, *, started_at: datetime | None = None
    ) -> SessionResult: ...


def _retry_backoff() -> Backoff:
    return Backoff(initial=timedelta(milliseconds=200), maximum=timedelta(seconds=5))


@dataclass(slots=True, eq=False)
class _InFlight:
    envelope: JobEnvelope
    started_at: datetime
    message: Msg
    pool: _Pool
    session: asyncio.Task[SessionResult] | None = None
    # When the message's ack timer was last reset (loop time): at delivery, then by in_progress.
    refreshed: float = 0.0


@dataclass(slots=True, eq=False)
class _Pool:
    """One pool's durable consumer, its subscription, and the one operation running on it."""

    name: str
    consumer: str
    ack_wait: timedelta = timedelta(seconds=30)
    psub: JetStreamContext.PullSubscription | None = None
    # A fetch (returns its messages) or binding, backing off, checking (returns None).
    op: asyncio.Task[list[Msg] | None] | None = None
    # Free slots the fetch in flight asked for; a lingering one-message fetch claims none.
    claimed: int = 0
    # The last fetch brought messages: ask for free slots rather than for one message.
    busy: bool = False
    errors: int = 0
    empty: int = 0
    backoff: Backoff = field(default_factory=_retry_backoff)


class JobWorker:
    """Fetches at most the free slots from its pools' consumers and handles each message in a task."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        pools: Sequence[str],
        runner: Runner,
        reporter: ResultReporter,
        slots: int,
        shutdown_grace: timedelta,
        ready: asyncio.Event,
        fetch_timeout: timedelta = timedelta(seconds=1),
    ) -> None:
        if not pools:
            raise ValueError("a job worker needs at least one pool")
        self._js = js
        self._pools = [
            _Pool(name=name, consumer=pool_consumer(name)) for name in dict.fromkeys(pools)
        ]
        # Which pool is asked first turns round after every fetch round.
        self._rotation = deque(self._pools)
        self._runner = runner
        self._reporter = reporter
        self._slots = max(1, slots)
        self._grace = shutdown_grace
        self._ready = ready
        self._fetch_timeout = fetch_timeout
        self._busy_fetch_timeout = min(_BUSY_FETCH_TIMEOUT, fetch_timeout)
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._handlers: dict[asyncio.Task[None], _InFlight] = {}
        self._cancelled_runs: OrderedDict[str, None] = OrderedDict()
        self._accepting = True
        self._stopping = asyncio.Event()
        # Set when the fetch loop has something to look at; `_waiter` is what it awaits then.
        self._wake = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        # Set once every pool's consumer is bound.
        self.bound = asyncio.Event()
        # The NATS connection came back: bind every pool again before fetching.
        self._rebind_all = False

    @property
    def pools(self) -> tuple[str, ...]:
        return tuple(pool.name for pool in self._pools)

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
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="job-worker")
            self._keeper = loop.create_task(self._keep_alive(), name="job-keep-alive")

    def set_slots(self, slots: int) -> None:
        """Dynamic concurrency: takes effect at the next fetch; running sessions are not stopped."""
        if slots < 1:
            logger.warning("ignoring slots=%d (must be at least 1)", slots)
            return
        if slots != self._slots:
            logger.info("slots %d -> %d", self._slots, slots)
            self._slots = slots
            self._signal()

    def cancel_run(self, run_id: str) -> None:
        """Stop this run's sessions; they, and its messages still to come, report `cancelled`."""
        self._cancelled_runs[run_id] = None
        self._cancelled_runs.move_to_end(run_id)
        while len(self._cancelled_runs) > _REMEMBER_CANCELLED_RUNS:
            self._cancelled_runs.popitem(last=False)
        for item in self._handlers.values():
            if item.envelope.run_id == run_id and item.session is not None:
                item.session.cancel()

    def reconnected(self) -> None:
        """The NATS connection came back (another server, or the same one): pull requests sent
        on the old connection are gone, so every pool binds again and fetches at once, rather
        than waiting for its fetch to time out and its stall check to notice."""
        self._rebind_all = True
        self._signal()

    def pause(self) -> None:
        """Take no new jobs (cordoned); the running ones go on."""
        self._accepting = False
        self._signal()

    def resume(self) -> None:
        """Take jobs again after `pause` or `drain` (never once stopping)."""
        if not self._stopping.is_set():
            self._accepting = True
            self._signal()

    async def drain(self) -> None:
        """Take no new jobs and wait until the running ones are done."""
        self.pause()
        await self._idle.wait()

    async def stop(self) -> None:
        """Stop fetching, give in-flight sessions `shutdown_grace`, nak the rest. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        self._accepting = False
        self._stopping.set()
        self._signal()
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
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        for pool in self._pools:
            await self._unsubscribe(pool)

    # --- the fetch loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        await self._wait_or_stop(self._ready.wait())
        if self._stopping.is_set():
            return
        for pool in self._pools:
            self._begin(pool, self._bind(pool), "bind")
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                if self._rebind_all:
                    self._rebind_pools()
                self._start_fetches()
                await self._wait_for_pools()
                await self._collect()
            # Fetches in flight end within their timeout; what they bring is naked.
            running = [pool.op for pool in self._pools if pool.op is not None]
            if running:
                await asyncio.wait(running)
            await self._collect()
        finally:
            running = [pool.op for pool in self._pools if pool.op is not None]
            for op in running:
                op.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _rebind_pools(self) -> None:
        self._rebind_all = False
        for pool in self._pools:
            if pool.op is not None and not pool.op.done():
                pool.op.cancel()  # a fetch on the dead connection; what it had is redelivered
            pool.claimed = 0
            pool.busy = False
            pool.errors = 0
            self._begin(pool, self._rebind(pool), "rebind")

    def _start_fetches(self) -> None:
        """Give every idle pool a fetch while slots are free, sharing the free slots fairly."""
        free = self.free
        if free <= 0:
            return
        idle = [pool for pool in self._rotation if pool.op is None and pool.psub is not None]
        unclaimed = free - sum(pool.claimed for pool in self._pools)
        busy = [pool for pool in idle if pool.busy]
        for index, pool in enumerate(busy):
            if unclaimed <= 0:
                break  # it is asked again once slots free up or a fetch gives its claim back
            share = -(-unclaimed // (len(busy) - index))  # a fair share of what is left, rounded up
            unclaimed -= share
            self._begin_fetch(pool, batch=share, claim=share, timeout=self._busy_fetch_timeout)
            # The pool asked least recently comes first next time.
            self._rotation.remove(pool)
            self._rotation.append(pool)
        for pool in idle:
            if not pool.busy:
                # Lingers until a message arrives: claims no slot, a surplus one is naked.
                self._begin_fetch(pool, batch=1, claim=0, timeout=self._fetch_timeout)

    def _begin_fetch(self, pool: _Pool, *, batch: int, claim: int, timeout: timedelta) -> None:
        psub = pool.psub
        assert psub is not None

        async def fetch() -> list[Msg] | None:
            return await psub.fetch(batch=batch, timeout=timeout.total_seconds())

        pool.claimed = claim
        self._begin(pool, fetch(), "fetch")

    def _begin(
        self, pool: _Pool, operation: Coroutine[Any, Any, list[Msg] | None], what: str
    ) -> None:
        pool.op = asyncio.get_running_loop().create_task(operation, name=f"{what}-{pool.name}")

    def _signal(self) -> None:
        """Wake the fetch loop (a slot freed up, slots changed, pausing, stopping)."""
        self._wake.set()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait_for_pools(self) -> None:
        """Until a pool's operation ends, a slot frees up, or the worker stops.

        One future and callbacks rather than tasks and asyncio.wait: this runs about once per
        job at high rates."""
        if self._wake.is_set():
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()

        def done(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        running = [pool.op for pool in self._pools if pool.op is not None]
        for op in running:
            op.add_done_callback(done)
        # Operations end within their own timeout; with none running, wake up now and then.
        timer = None if running else loop.call_later(self._fetch_timeout.total_seconds(), done)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
            for op in running:
                op.remove_done_callback(done)

    async def _collect(self) -> None:
        """Take the outcome of every finished pool operation: dispatch messages, count errors."""
        for pool in list(self._rotation):
            op = pool.op
            if op is None or not op.done():
                continue
            pool.op = None
            pool.claimed = 0
            if op.cancelled():
                continue
            error = op.exception()
            if error is None:
                messages = op.result()
                if messages is not None:
                    pool.busy = True
                    pool.errors = pool.empty = 0
                    pool.backoff.reset()
                    for message in messages:
                        await self._dispatch(pool, message)
            elif isinstance(error, TimeoutError):  # nats.errors.TimeoutError too: nothing arrived
                pool.busy = False
                pool.errors = 0
                pool.empty += 1
                if pool.empty % _STALL_CHECK_EVERY == 0 and not self._stopping.is_set():
                    self._begin(pool, self._check_stalled(pool), "check")
            else:
                pool.busy = False
                pool.errors += 1
                logger.warning(
                    "%s of %s failed (%d in a row): %s",
                    op.get_name().split("-", 1)[0],
                    pool.consumer,
                    pool.errors,
                    error or type(error).__name__,
                )
                if not self._stopping.is_set():
                    self._begin(pool, self._recover(pool), "recover")

    async def _dispatch(self, pool: _Pool, message: Msg) -> None:
        if self.free <= 0:
            # Beyond the free slots (the pools share them), or fetched just as the node began
            # draining or stopping: another node, or a later fetch, can have it now.
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
        item = _InFlight(
            envelope=envelope,
            started_at=datetime.now(UTC),
            message=message,
            pool=pool,
            refreshed=asyncio.get_running_loop().time(),
        )
        handler = asyncio.get_running_loop().create_task(
            self._handle(pool, message, item), name=f"job-{envelope.job_id}:{envelope.attempt}"
        )
        self._handlers[handler] = item
        self._idle.clear()
        handler.add_done_callback(self._finished)

    def _finished(self, handler: asyncio.Task[None]) -> None:
        self._handlers.pop(handler, None)
        if not self._handlers:
            self._idle.set()
        self._signal()
        if not handler.cancelled() and handler.exception() is not None:
            logger.error("job handler failed", exc_info=handler.exception())

    async def _handle(self, pool: _Pool, message: Msg, item: _InFlight) -> None:
        envelope = item.envelope
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
                await self._settle(message.nak(delay=pool.ack_wait.total_seconds()), "nak")
        except asyncio.CancelledError:
            logger.info("giving back job %s attempt %d", envelope.job_id, envelope.attempt)
            await self._settle(message.nak(), "nak")
            raise

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

    async def _keep_alive(self) -> None:
        """Reset the ack timer of every message whose job runs long, at least every ack wait / 3:
        one loop for all jobs, as most end long before their first reset."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):  # binding reads each consumer's ack wait
            await asyncio.wait_for(self.bound.wait(), 1.0)
        while True:
            period = min(1.0, max(0.05, min(p.ack_wait.total_seconds() for p in self._pools) / 6))
            await asyncio.sleep(period)
            now = loop.time()
            for item in list(self._handlers.values()):
                interval = max(0.1, item.pool.ack_wait.total_seconds() / 3)
                if now - item.refreshed < interval - period:
                    continue
                item.refreshed = now
                try:
                    await item.message.in_progress()
                except (nats.errors.Error, OSError):
                    pass  # the next sweep tries again; at worst the message is redelivered
                except Exception:
                    logger.exception("keeping job %s alive failed", item.envelope.job_id)

    async def _settle(self, call: Awaitable[object], what: str) -> None:
        # Acks, naks and terms are publishes: they go to the client's buffer and return (what
        # waits is bounded by the connection's flush timeout, see bus.connect).
        try:
            await call
        except (nats.errors.Error, OSError, TimeoutError) as error:
            # JetStream redelivers after the ack wait; nothing is lost, only delayed.
            logger.warning("could not %s a message: %s", what, error)

    # --- binding and recovering, one pool at a time ----------------------------------------------

    async def _bind(self, pool: _Pool) -> list[Msg] | None:
        """Bind to the pool's durable consumer, waiting until the scheduler created it."""
        backoff = _retry_backoff()
        waiting_logged = False
        while not self._stopping.is_set():
            try:
                info = await self._js.consumer_info(STREAM, pool.consumer, timeout=_NATS_TIMEOUT)
                pool.psub = await self._js.pull_subscribe_bind(
                    consumer=pool.consumer, stream=STREAM
                )
            except NotFoundError:
                if not waiting_logged:
                    logger.info("waiting for the scheduler to create consumer %s", pool.consumer)
                    waiting_logged = True
            except (nats.errors.Error, OSError, TimeoutError) as error:
                logger.warning("cannot bind consumer %s yet: %s", pool.consumer, error)
            else:
                if info.config.ack_wait:
                    pool.ack_wait = timedelta(seconds=info.config.ack_wait)
                logger.info(
                    "taking jobs from %s/%s (%d pool(s) share %d slot(s)), ack wait %.0fs",
                    STREAM,
                    pool.consumer,
                    len(self._pools),
                    self._slots,
                    pool.ack_wait.total_seconds(),
                )
                if all(each.psub is not None for each in self._pools):
                    self.bound.set()
                return None
            await self._wait_or_stop(asyncio.sleep(backoff.next().total_seconds()))
        return None

    async def _recover(self, pool: _Pool) -> list[Msg] | None:
        """Back off after a failed fetch; rebind after several in a row."""
        await self._wait_or_stop(asyncio.sleep(pool.backoff.next().total_seconds()))
        if pool.errors >= _REBIND_AFTER_ERRORS and not self._stopping.is_set():
            pool.errors = 0
            await self._rebind(pool)
        return None

    async def _check_stalled(self, pool: _Pool) -> list[Msg] | None:
        if await self._stalled(pool):
            await self._rebind(pool)
        return None

    async def _rebind(self, pool: _Pool) -> None:
        logger.warning("rebinding consumer %s", pool.consumer)
        await self._unsubscribe(pool)
        await self._bind(pool)

    async def _stalled(self, pool: _Pool) -> bool:
        """Messages wait but none reach us: the subscription may be dead after a server restart."""
        try:
            info = await self._js.consumer_info(STREAM, pool.consumer, timeout=_NATS_TIMEOUT)
        except NotFoundError:
            return True
        except (nats.errors.Error, OSError, TimeoutError):
            return False
        return bool(info.num_pending) and self.free > 0

    async def _unsubscribe(self, pool: _Pool) -> None:
        psub, pool.psub = pool.psub, None
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

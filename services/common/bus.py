"""The job bus on NATS JetStream: one work-queue stream, one durable pull consumer per pool."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NotFoundError

from services.common.contracts import envelope_to_bytes
from services.common.errors import FailedPrecondition
from services.common.types import JobEnvelope

logger = logging.getLogger(__name__)

STREAM = "SMARTFLEET_JOBS"
SUBJECT_PREFIX = "smartfleet.jobs"
# Re-publishes of the same (job id, attempt) inside this window are dropped by the stream.
DUPLICATE_WINDOW = timedelta(minutes=2)
# How long a batch of publishes waits for the stream's acks before the rest count as failed
# (they go again at the next tick: a stream electing a new leader is retried this often).
PUBLISH_TIMEOUT = timedelta(seconds=2)
# After this many batches in a row without a single ack, the bus asks its server for a PONG;
# a server that does not answer within PONG_TIMEOUT (a cut link: no RST, and pings would take
# ~20 s to tell) is left for the next one in the list.
SILENT_BATCHES = 2
PONG_TIMEOUT = timedelta(seconds=2)
# While publishes keep failing, one warning this often.
FAILURE_LOG_EVERY = timedelta(seconds=5)
# A connection whose server vanished without a word (a cut link, no RST) is given up after
# about MAX_OUTSTANDING_PINGS unanswered pings this far apart (nats-py's default is 2 minutes).
PING_INTERVAL = timedelta(seconds=10)
MAX_OUTSTANDING_PINGS = 2
# JetStream API errors that mean "the cluster cannot place this many replicas".
_TOO_FEW_SERVERS = frozenset({10005, 10023, 10074})


_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def pool_name(engine: str, labels: Iterable[tuple[str, str]] = ()) -> str:
    """A pool is an engine plus placement labels: `chromium`, `chromium.region_eu`."""
    parts = [engine, *(_TOKEN_UNSAFE.sub("-", f"{key}_{value}") for key, value in sorted(labels))]
    return ".".join(parts)


def node_pools(engines: Iterable[str], labels: dict[str, str]) -> list[str]:
    """Every pool a node can serve: each engine with each subset of its labels."""
    items = sorted(labels.items())
    subsets = [
        combo for size in range(len(items) + 1) for combo in itertools.combinations(items, size)
    ]
    return [pool_name(engine, subset) for engine in engines for subset in subsets]


def pool_subject(pool: str) -> str:
    return f"{SUBJECT_PREFIX}.{pool}"


def pool_consumer(pool: str) -> str:
    return f"pool-{pool.replace('.', '_')}"


def message_id(job_id: str, attempt: int) -> str:
    return f"{job_id}:{attempt}"


async def connect(
    servers: Sequence[str],
    *,
    name: str,
    reconnected: Callable[[], Awaitable[None]] | None = None,
) -> NatsClient:
    """A long-lived connection that keeps reconnecting instead of giving up.

    The servers are tried in the order given (a host lists its own server first, so it does
    not reach the cluster through another host), and a silent server is given up after about
    PING_INTERVAL * MAX_OUTSTANDING_PINGS. `reconnected` runs after every reconnect.
    """

    async def on_error(error: Exception) -> None:
        logger.warning("nats: %s", error)

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            logger.warning("nats: disconnected; reconnecting")

    async def on_reconnected() -> None:
        logger.info("nats: reconnected to %s", nc.connected_url.netloc if nc.connected_url else "?")
        if reconnected is not None:
            await reconnected()

    nc = NatsClient()
    await nc.connect(
        servers=list(servers),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # annotated int, used as seconds
        connect_timeout=5,
        # Bounds the wait of a publish (acks included) when the client's buffer is full.
        flush_timeout=5,
        dont_randomize=True,
        ping_interval=int(PING_INTERVAL.total_seconds()),
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
    return nc


async def close(nc: NatsClient, *, timeout: float = 5.0) -> None:
    """Drain within `timeout`, then close: a connection stuck reconnecting must not hang shutdown."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.drain(), timeout)
    if not nc.is_closed:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout)


class JobBus:
    """The scheduler's end of the bus: the stream and pool consumers (it owns this topology),
    and publishing job envelopes.

    Built either on a JetStream context (`JobBus(js, ack_wait=…)`) or on server URLs, in
    which case `connect()` opens (and `close()` ends) a connection of its own.
    """

    def __init__(
        self,
        js: JetStreamContext | None = None,
        *,
        ack_wait: timedelta,
        servers: Sequence[str] = (),
        name: str = "smartfleet",
        duplicate_window: timedelta = DUPLICATE_WINDOW,
        replicas: int = 1,
    ) -> None:
        if js is None and not servers:
            raise ValueError("a JobBus needs a JetStream context or server URLs")
        self._js = js
        self.ack_wait = ack_wait
        self._servers = list(servers)
        self._name = name
        self._nc: NatsClient | None = None
        self.duplicate_window = duplicate_window
        self.replicas = replicas
        self._silent_batches = 0
        self._closing: set[asyncio.Task[None]] = set()
        self._failing_since: float | None = None
        self._failure_logged = 0.0

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the job bus is not connected")
        return self._js

    async def connect(self) -> None:
        if self._js is None:
            self._nc = await connect(self._servers, name=self._name)
            self._js = self._nc.jetstream()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            self._js = None
            await close(nc)

    async def ensure_stream(self) -> None:
        """Create or update the job stream with `replicas` copies; FailedPrecondition, saying
        what to change, when the NATS servers cannot keep that many."""
        config = StreamConfig(
            name=STREAM,
            subjects=[f"{SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window.total_seconds(),
            num_replicas=self.replicas,
        )
        cluster = self._cluster_name()
        if self.replicas > 1 and self._nc is not None and not cluster:
            raise self._too_few("the NATS server it is connected to is not part of a cluster")
        try:
            try:
                await self.js.add_stream(config)
            except BadRequestError:
                await self.js.update_stream(config)
        except APIError as error:
            if self.replicas > 1 and error.err_code in _TOO_FEW_SERVERS:
                raise self._too_few(f"JetStream says: {error.description}") from None
            raise
        info = await self.js.stream_info(STREAM)
        copies = 1 + len(info.cluster.replicas or []) if info.cluster else 1
        if copies < self.replicas:
            raise self._too_few(f"the stream has {copies} cop{'y' if copies == 1 else 'ies'}")
        if self.replicas == 1 and cluster:
            logger.warning(
                "the job stream has 1 replica on NATS cluster %s: losing the server that holds "
                "it stops dispatch; set SMARTFLEET_NATS_REPLICAS=3",
                cluster,
            )

    def _cluster_name(self) -> str:
        info = getattr(self._nc, "_server_info", None) or {}
        return str(info.get("cluster") or "")

    def _too_few(self, why: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"SMARTFLEET_NATS_REPLICAS={self.replicas} needs a NATS cluster of at least "
            f"{self.replicas} JetStream servers, and {why}; give --nats-url the cluster's "
            "servers or set SMARTFLEET_NATS_REPLICAS=1"
        )

    async def ensure_pool(self, pool: str) -> None:
        """The durable pull consumer every node serving `pool` binds to."""
        await self.js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=pool_consumer(pool),
                filter_subject=pool_subject(pool),
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait.total_seconds(),
                max_deliver=-1,
                # The scheduler's credit already bounds what is outstanding; don't cap it twice.
                max_ack_pending=100_000,
                max_waiting=4096,
                num_replicas=self.replicas,
            ),
        )

    async def pool_exists(self, pool: str) -> bool:
        try:
            await self.js.consumer_info(STREAM, pool_consumer(pool))
        except NotFoundError:
            return False
        return True

    async def publish(self, envelopes: Sequence[JobEnvelope]) -> list[JobEnvelope]:
        """Publish all, then wait for their acks together: the stream's acks pipeline instead
        of one request-reply per envelope. Returns the envelopes that failed or timed out, to
        publish again later (the message id makes a repeat harmless)."""
        sent: list[tuple[JobEnvelope, asyncio.Future[Any]]] = []
        failed: list[tuple[JobEnvelope, BaseException | None]] = []
        for envelope in envelopes:
            try:
                ack = await self.js.publish_async(
                    pool_subject(pool_name(envelope.cell.engine, envelope.cell.labels)),
                    envelope_to_bytes(envelope),
                    headers={"Nats-Msg-Id": message_id(envelope.job_id, envelope.attempt)},
                )
            except Exception as refused:
                failed.append((envelope, refused))
            else:
                sent.append((envelope, ack))
        if sent:
            _, late = await asyncio.wait(
                [ack for _, ack in sent], timeout=PUBLISH_TIMEOUT.total_seconds()
            )
            for ack in late:
                ack.cancel()
            self._silent_batches = self._silent_batches + 1 if len(late) == len(sent) else 0
            for envelope, ack in sent:
                if ack.cancelled():
                    failed.append((envelope, TimeoutError("no ack from the stream")))
                elif (nacked := ack.exception()) is not None:
                    failed.append((envelope, nacked))
        self._log_failures(failed)
        if self._silent_batches >= SILENT_BATCHES:
            self._silent_batches = 0
            await self._leave_if_silent()
        return [envelope for envelope, _ in failed]

    def _log_failures(self, failed: list[tuple[JobEnvelope, BaseException | None]]) -> None:
        """A warning when publishes start failing, then one every FAILURE_LOG_EVERY (a stream
        electing a leader fails every retry for seconds), and a line when they work again."""
        now = asyncio.get_running_loop().time()
        if not failed:
            if self._failing_since is not None:
                logger.info("publishing works again after %.1fs", now - self._failing_since)
                self._failing_since = None
            return
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failure_logged < FAILURE_LOG_EVERY.total_seconds():
            return
        self._failure_logged = now
        first, reason = failed[0]
        logger.warning(
            "publish of %d envelope(s) failed, e.g. %s: %s; retrying (failing for %.1fs)",
            len(failed),
            first.job_id,
            reason or type(reason).__name__,
            now - self._failing_since,
        )

    async def _leave_if_silent(self) -> None:
        """No acks at all: if the server itself is silent, connect to the next one."""
        nc = self._nc
        if nc is None:
            return  # a JetStream context of someone else's connection: theirs to manage
        try:
            await nc.flush(timeout=int(PONG_TIMEOUT.total_seconds()))
            return  # the server answers: the stream is electing a leader, publishes go on
        except Exception as error:
            silent = nc.connected_url.netloc if nc.connected_url else "?"
            logger.warning("nats server %s does not answer (%s); trying the next", silent, error)
        servers = sorted(self._servers, key=lambda url: silent in url)  # it goes last
        try:
            fresh = await connect(servers, name=self._name)
        except Exception as error:
            logger.warning("no other nats server answers either (%s); staying", error)
            return
        self._nc, self._js = fresh, fresh.jetstream()
        closing = asyncio.get_running_loop().create_task(close(nc, timeout=2.0))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

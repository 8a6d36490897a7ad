"""The browser node: warm browser, scheduler link, job worker and a gRPC health endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta

import nats.errors
from nats.aio.client import Client as NatsClient

from services import __version__
from services.browser_node._accounts import AccountStates
from services.browser_node._artifacts import ArtifactStore
from services.browser_node._backoff import Backoff
from services.browser_node._host import cpu_percent, rss_bytes
from services.browser_node._link import (
    CancelRun,
    Cordon,
    Drain,
    NodeCommand,
    NodeStatus,
    SchedulerLink,
    SetSlots,
)
from services.browser_node._noop import NOOP_ENGINE, NoopRunner
from services.browser_node._pool import BrowserPool
from services.browser_node._reporter import ResultReporter
from services.browser_node._session import ENGINE, SessionRunner
from services.browser_node._worker import JobWorker, Runner
from services.common import bus
from services.common.bus import connect, node_pools
from services.common.config import MAX_NODE_LABELS, NodeSettings
from services.common.errors import SmartfleetError
from services.common.grpc_server import ServiceServer, write_ready_file
from services.common.types import NodeInfo, NodeLoad, NodeState

logger = logging.getLogger(__name__)

SERVICE_NAME = "smartfleet.v1.BrowserNode"
_NATS_DRAIN_TIMEOUT = 5.0
# Sessions this old are reported in progress, so the scheduler extends their deadlines; shorter
# ones finish well within the scheduler's recovery grace and would only cost it writes.
_LONG_SESSION = timedelta(seconds=5)


BROWSER_LABEL = "browser"


def version_labels(labels: dict[str, str], browser_version: str) -> dict[str, str]:
    """Add `browser=<major>` (e.g. 156) unless the operator set `browser` or uses every label.

    A run then requires a browser version with the placement label `{browser: "156"}`.
    """
    major = browser_version.split(".", 1)[0]
    if not major.isdigit() or BROWSER_LABEL in labels or len(labels) >= MAX_NODE_LABELS:
        return dict(labels)
    return {**labels, BROWSER_LABEL: major}


class BrowserNode:
    """One node: `await node.start()`, later `await node.stop()` (drains; idempotent).

    Start-up order matters: the health endpoint answers at once (NOT_SERVING); the browser is
    launched next and, until it runs, the node takes no jobs and keeps retrying; then NATS, the
    scheduler registration, and the worker binding the consumers of every pool it serves (its
    engine alone and with each subset of its labels) once registered.
    """

    def __init__(self, *, settings: NodeSettings) -> None:
        self._settings = settings
        self.node_id = settings.node_id
        self._health = ServiceServer(listen=settings.node_listen, service_names=[SERVICE_NAME])
        self.link = SchedulerLink(
            address=settings.scheduler_addr,
            info=self._info,
            status=self._status,
            on_command=self._on_command,
        )
        # Account state comes from the scheduler over the same link.
        self.pool = BrowserPool(
            browser_path=settings.browser_path,
            headless=settings.headless,
            accounts=AccountStates(source=self.link),
            max_account_browsers=settings.account_browsers,
            account_idle=settings.account_browser_idle,
            proxy=settings.node_proxy or "",
            recycle_after=settings.browser_recycle_after,
            recycle_above_mb=settings.browser_recycle_above_mb,
            launch_spacing=settings.browser_launch_spacing,
        )
        self._runner = SessionRunner(
            pool=self.pool,
            node_id=self.node_id,
            artifacts=ArtifactStore(settings.artifact_dir),
            uploader=self.link,
        )
        # Benchmark-only: the noop engine completes jobs without a browser (never a default).
        self._engine = NOOP_ENGINE if settings.node_engine == NOOP_ENGINE else ENGINE
        self._jobs: Runner = (
            NoopRunner(node_id=self.node_id) if self._engine == NOOP_ENGINE else self._runner
        )
        self._reporter = ResultReporter(
            link=self.link,
            batch_size=settings.report_batch_size,
            linger=settings.report_linger,
        )
        self._slots = settings.effective_slots
        self._nats: NatsClient | None = None
        self.worker: JobWorker | None = None
        self.state = NodeState.READY
        self.address = ""
        self.serving = asyncio.Event()
        self._bring_up: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Serve health and begin bringing the node up in the background; returns the health address."""
        self.address = await self._health.start()
        # Not serving until the browser runs and the bus is connected.
        await self._health.set_serving(False)
        self._bring_up = asyncio.get_running_loop().create_task(
            self._come_up(), name="node-bring-up"
        )
        write_ready_file(self._settings.ready_file, node=self.address, node_id=self.node_id)
        return self.address

    async def stop(self) -> None:
        """Drain: stop taking jobs, finish in-flight ones within the grace, nak the rest, close."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(
                self._shut_down(), name="node-stop"
            )
        await asyncio.shield(self._stopping)

    async def __aenter__(self) -> BrowserNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _come_up(self) -> None:
        if self._engine == NOOP_ENGINE:
            logger.warning("benchmark-only noop engine: jobs complete at once, without a browser")
        else:
            await self._start_browser()
        self._nats = await self._connect_nats()
        self._reporter.start()
        self.link.start()
        self.worker = JobWorker(
            js=self._nats.jetstream(),
            pools=node_pools((self._engine,), self.labels),
            runner=self._jobs,
            reporter=self._reporter,
            slots=self._slots,
            shutdown_grace=self._settings.shutdown_grace,
            ready=self.link.registered,
        )
        if self.state is not NodeState.READY:
            self.worker.pause()  # cordoned before the worker existed
        self.worker.start()
        await self._health.set_serving(True)
        self.serving.set()
        logger.info(
            "node %s up: %d slot(s), health on %s, artifacts in %s",
            self.node_id,
            self._slots,
            self.address,
            self._runner.artifacts.root,
        )

    async def _start_browser(self) -> None:
        backoff = Backoff(initial=timedelta(seconds=5), maximum=timedelta(minutes=1))
        while True:
            try:
                await self.pool.start()
                return
            except SmartfleetError as error:
                delay = backoff.next()
                logger.error(
                    "no usable browser, so this node takes no jobs (health NOT_SERVING): %s "
                    "-- trying again in %.0fs",
                    error.message,
                    delay.total_seconds(),
                )
                await asyncio.sleep(delay.total_seconds())

    async def _connect_nats(self) -> NatsClient:
        # connect() itself keeps retrying an unreachable server; this covers what it gives up on.
        backoff = Backoff(initial=timedelta(milliseconds=500), maximum=timedelta(seconds=10))
        logger.info("connecting to NATS at %s", self._settings.nats_url)
        while True:
            try:
                return await connect(
                    self._settings.nats_servers,
                    name=f"smartfleet-node-{self.node_id}",
                    reconnected=self._nats_reconnected,
                )
            except (nats.errors.Error, OSError, TimeoutError) as error:
                delay = backoff.next()
                logger.warning(
                    "cannot reach NATS at %s (%s); trying again in %.1fs",
                    self._settings.nats_url,
                    error or type(error).__name__,
                    delay.total_seconds(),
                )
                await asyncio.sleep(delay.total_seconds())

    async def _nats_reconnected(self) -> None:
        if self.worker is not None:
            self.worker.reconnected()

    async def _shut_down(self) -> None:
        logger.info(
            "node %s draining (grace %.0fs)",
            self.node_id,
            self._settings.shutdown_grace.total_seconds(),
        )
        self.state = NodeState.DRAINING
        await self._health.set_serving(False)
        for task in (self._bring_up, self._drain):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.worker is not None:
            await self.worker.stop()
        self.state = NodeState.DRAINED
        await self._reporter.stop()
        await self.link.stop()
        if self._nats is not None:
            await bus.close(self._nats, timeout=_NATS_DRAIN_TIMEOUT)
        await self.pool.stop()
        await self._health.stop(grace=1.0)
        logger.info("node %s stopped", self.node_id)

    @property
    def labels(self) -> dict[str, str]:
        """The operator's labels, plus `browser=<major version>` so runs can require a version."""
        return version_labels(self._settings.labels, self.pool.browser_version)

    def _info(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.node_id,
            host=self._settings.node_host,
            engines=(self._engine,),
            labels=self.labels,
            slots=self.worker.slots if self.worker else self._slots,
            version=__version__,
            playwright_version=self.pool.playwright_version,
            browser_versions={ENGINE: self.pool.browser_version}
            if self.pool.browser_version
            else {},
        )

    def _status(self) -> NodeStatus:
        worker = self.worker
        busy = worker.busy if worker else 0
        return NodeStatus(
            load=NodeLoad(
                busy_slots=busy,
                free_slots=worker.free if worker else 0,
                cpu_percent=cpu_percent(),
                rss_bytes=rss_bytes(),
            ),
            state=self.state,
            slots=worker.slots if worker else self._slots,
            in_flight=worker.running_longer_than(_LONG_SESSION) if worker else (),
        )

    def _on_command(self, command: NodeCommand) -> None:
        worker = self.worker
        if isinstance(command, SetSlots):
            self._slots = command.slots
            if worker is not None:
                worker.set_slots(command.slots)
        elif isinstance(command, CancelRun):
            logger.info("cancelling run %s", command.run_id)
            if worker is not None:
                worker.cancel_run(command.run_id)
        elif self._stopping is not None:
            return  # shutting down: nothing turns that around
        elif isinstance(command, Cordon):
            self._cordon(on=command.on)
        elif isinstance(command, Drain) and self.state in (NodeState.READY, NodeState.CORDONED):
            logger.info("draining on the scheduler's request")
            self.state = NodeState.DRAINING
            if worker is None:
                self.state = NodeState.DRAINED  # no worker yet: nothing runs
            else:
                self._drain = asyncio.get_running_loop().create_task(self._drain_worker(worker))

    def _cordon(self, *, on: bool) -> None:
        """Cordon (take no new jobs) or uncordon (take jobs again, also after a drain)."""
        target = NodeState.CORDONED if on else NodeState.READY
        if self.state is target:
            return
        logger.info("%s on the scheduler's request", "cordoned" if on else "uncordoned")
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.cancel()
        self.state = target
        if self.worker is not None:
            if on:
                self.worker.pause()
            else:
                self.worker.resume()

    async def _drain_worker(self, worker: JobWorker) -> None:
        await worker.drain()
        if self.state is NodeState.DRAINING:
            self.state = NodeState.DRAINED
            logger.info("node %s drained", self.node_id)


async def serve(settings: NodeSettings) -> None:
    """Run a node until SIGINT or SIGTERM, then drain it."""
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if shutdown.is_set():
            logger.info("already shutting down (signal %s)", signal.Signals(signum).name)
        shutdown.set()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
    node = BrowserNode(settings=settings)
    try:
        await node.start()
        await shutdown.wait()
    finally:
        await node.stop()
        for signum in installed:
            loop.remove_signal_handler(signum)

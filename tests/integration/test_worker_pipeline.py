"""The job worker and result reporter against a real nats-server, without a browser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import nats
import pytest
from nats.aio.client import Client as NatsClient

from services.browser_node._noop import NoopRunner
from services.browser_node._reporter import ResultReporter
from services.browser_node._worker import JobWorker
from services.common.bus import STREAM, JobBus, message_id, pool_consumer, pool_subject
from services.common.contracts import envelope_to_bytes
from services.common.nats_server import EmbeddedNatsServer
from services.common.types import Cell, JobEnvelope, SessionResult

pytestmark = pytest.mark.timeout(60)

POOL = "noop"


class StoringLink:
    """Stands in for the scheduler's ReportResults: stores everything, counts the calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.stored: dict[tuple[str, int], SessionResult] = {}

    async def report_results(self, results: Sequence[SessionResult]) -> set[tuple[str, int]]:
        self.calls.append(len(results))
        for result in results:
            self.stored[(result.job_id, result.attempt)] = result
        return {(r.job_id, r.attempt) for r in results}


class SlowRunner(NoopRunner):
    """A session that takes `seconds`, longer than the consumer's ack wait."""

    def __init__(self, seconds: float) -> None:
        super().__init__(node_id="slow")
        self._seconds = seconds
        self.runs = 0

    async def run(self, envelope: JobEnvelope) -> SessionResult:
        self.runs += 1
        await asyncio.sleep(self._seconds)
        return await super().run(envelope)


@pytest.fixture
async def nc(nats_server: EmbeddedNatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


async def publish(nc: NatsClient, count: int, *, run_id: str = "run-1") -> None:
    js = nc.jetstream()
    for index in range(count):
        envelope = JobEnvelope(
            job_id=f"{run_id}-{index}",
            attempt=1,
            run_id=run_id,
            index=index,
            target_url="http://127.0.0.1:9/",
            engine=POOL,
            session_timeout=timedelta(seconds=30),
            deadline=datetime.now(UTC) + timedelta(minutes=1),
            cell=Cell(engine=POOL),
        )
        await js.publish(
            pool_subject(POOL),
            envelope_to_bytes(envelope),
            headers={"Nats-Msg-Id": message_id(envelope.job_id, envelope.attempt)},
        )


async def until(condition: object, *, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_long_job_is_kept_alive_past_the_ack_wait(nc: NatsClient) -> None:
    """A job running 3.5 s on a 1 s ack wait is never redelivered: the worker keeps it alive."""
    js = nc.jetstream()
    bus = JobBus(js=js, ack_wait=timedelta(seconds=1))
    await bus.ensure_stream()
    await bus.ensure_pool(POOL)
    link = StoringLink()
    reporter = ResultReporter(link=link)  # type: ignore[arg-type]
    ready = asyncio.Event()
    ready.set()
    runner = SlowRunner(3.5)
    worker = JobWorker(
        js=js,
        pools=[POOL],
        runner=runner,
        reporter=reporter,
        slots=4,
        shutdown_grace=timedelta(seconds=5),
        ready=ready,
    )
    reporter.start()
    worker.start()
    try:
        await publish(nc, 2)
        await until(lambda: len(link.stored) == 2)
        await until(lambda: worker.busy == 0)
        info = await js.consumer_info(STREAM, pool_consumer(POOL))
    finally:
        await worker.stop()
        await reporter.stop()
    # Redelivered messages would have run again (the node has free slots).
    assert runner.runs == 2
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_many_jobs_are_reported_in_few_calls_and_all_acked(nc: NatsClient) -> None:
    """2,000 noop jobs on 500 slots: every result stored once, acked after, in batched calls."""
    js = nc.jetstream()
    bus = JobBus(js=js, ack_wait=timedelta(seconds=30))
    await bus.ensure_stream()
    await bus.ensure_pool(POOL)
    link = StoringLink()
    reporter = ResultReporter(link=link, batch_size=256)  # type: ignore[arg-type]
    ready = asyncio.Event()
    ready.set()
    worker = JobWorker(
        js=js,
        pools=[POOL],
        runner=NoopRunner(node_id="fast"),
        reporter=reporter,
        slots=500,
        shutdown_grace=timedelta(seconds=5),
        ready=ready,
    )
    reporter.start()
    worker.start()
    try:
        await publish(nc, 2000)
        await until(lambda: len(link.stored) == 2000)
        await until(lambda: worker.busy == 0)
        info = await js.consumer_info(STREAM, pool_consumer(POOL))
    finally:
        await worker.stop()
        await reporter.stop()
    assert info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0
    assert sum(link.calls) == 2000 and max(link.calls) <= 256
    assert len(link.calls) < 2000 / 4  # batched, not one call per result

"""The scheduler against a real nats-server and a real database, with a test node peer.

The peer pulls envelopes from JetStream and reports over the real NodeLink gRPC API, so
dispatch credit, idempotent ingestion and completion are exercised without a browser.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta

import grpc
import nats
import pytest
from google.protobuf import duration_pb2
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

from services.common import bus
from services.common.config import SchedulerSettings
from services.common.contracts import envelope_from_bytes, node_info_to_pb, result_to_pb
from services.common.nats_server import EmbeddedNatsServer
from services.common.types import ErrorClass, NodeInfo, Outcome, SessionResult
from services.scheduler import SchedulerService
from smartfleet.v1 import (
    common_pb2,
    fleet_service_pb2_grpc,
    node_link_pb2,
    node_link_pb2_grpc,
    nodes_pb2,
    runs_pb2,
)
from tests.conftest import POSTGRES_URL, postgres_available

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[str]:
    """A fresh database: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    if not postgres_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import asyncpg

    admin_dsn = POSTGRES_URL.replace("postgresql+asyncpg", "postgresql")
    name = f"sf_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def scheduler(
    nats_server: EmbeddedNatsServer, database_url: str
) -> AsyncIterator[SchedulerService]:
    settings = SchedulerSettings(
        scheduler_listen="127.0.0.1:0",
        database_url=database_url,
        database_upgrade=True,
        nats_url=nats_server.url,
        ack_wait=timedelta(seconds=5),
        heartbeat_interval=timedelta(milliseconds=200),
        node_lost_after=timedelta(seconds=1),
        recovery_grace=timedelta(seconds=1),
    )
    service = SchedulerService(settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=timedelta(seconds=0.5))


@pytest.fixture
async def channel(scheduler: SchedulerService) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(scheduler.address) as chan:
        yield chan


def spec(sessions: int, **extra: object) -> runs_pb2.RunSpec:
    return runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=sessions, **extra)  # type: ignore[arg-type]


async def acked(fetching: Awaitable[list[Msg]]) -> list[Msg]:
    messages = await fetching
    for message in messages:
        await message.ack()
    return messages


def ok_result(envelope_data: bytes, *, node_id: str = "peer") -> SessionResult:
    envelope = envelope_from_bytes(envelope_data)
    now = datetime.now(UTC)
    return SessionResult(
        job_id=envelope.job_id,
        attempt=envelope.attempt,
        run_id=envelope.run_id,
        index=envelope.index,
        outcome=Outcome.OK,
        error_class=ErrorClass.NONE,
        started_at=now,
        finished_at=now,
        duration_ms=5.0,
        node_id=node_id,
        engine="chromium",
        http_status=200,
    )


async def register(
    link: node_link_pb2_grpc.NodeLinkServiceStub, *, slots: int, node_id: str = "peer"
) -> None:
    info = NodeInfo(node_id=node_id, host="test", engines=("chromium",), labels={}, slots=slots)
    await link.RegisterNode(
        node_link_pb2.RegisterNodeRequest(info=node_info_to_pb(info)), timeout=5
    )


async def wait_for_status(
    api: fleet_service_pb2_grpc.FleetServiceStub, run_id: str, status: int
) -> runs_pb2.Run:
    for _ in range(200):
        run = (await api.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=5)).run
        if run.status == status:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached status {status}: {run}")


async def test_run_completes_and_dispatch_stays_within_credit(
    scheduler: SchedulerService, channel: grpc.aio.Channel, nats_server: EmbeddedNatsServer
) -> None:
    """20 sessions on a 3-slot node: never more than 3 outstanding, and exactly 20 results."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await register(link, slots=3)
    run = (await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec(20), start=True), timeout=5)).run
    nc = await nats.connect(nats_server.url)
    psub = await nc.jetstream().pull_subscribe_bind(
        bus.pool_consumer("chromium"), stream=bus.STREAM
    )
    reported = 0
    try:
        while reported < 20:
            # Alive for the fixture's 1 s lost timeout, however slow the machine is today.
            await link.Heartbeat(
                node_link_pb2.HeartbeatRequest(
                    node_id="peer", state=nodes_pb2.NODE_STATE_READY, slots=3
                ),
                timeout=5,
            )
            try:
                messages = await psub.fetch(batch=10, timeout=0.5)
            except NatsTimeout:
                continue
            current = (await api.GetRun(runs_pb2.GetRunRequest(run_id=run.id), timeout=5)).run
            assert current.counters.in_flight <= 3
            assert len(messages) <= 3
            response = await link.ReportResults(
                node_link_pb2.ReportResultsRequest(
                    node_id="peer", results=[result_to_pb(ok_result(m.data)) for m in messages]
                ),
                timeout=5,
            )
            assert all(stored.new for stored in response.stored)
            for message in messages:
                await message.ack()
            reported += len(messages)
    finally:
        await nc.close()
    done = await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)
    assert (done.counters.succeeded, done.counters.failed, done.counters.in_flight) == (20, 0, 0)
    stats = (await api.GetRunStats(runs_pb2.GetRunStatsRequest(run_id=run.id), timeout=5)).stats
    assert stats.results == 20 and stats.success_rate == 1.0


async def test_reported_twice_is_counted_once(
    scheduler: SchedulerService, channel: grpc.aio.Channel, nats_server: EmbeddedNatsServer
) -> None:
    """Re-reporting the same (job, attempt) stores nothing new and leaves the counters alone."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await register(link, slots=2)
    run = (await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec(2), start=True), timeout=5)).run
    nc = await nats.connect(nats_server.url)
    try:
        psub = await nc.jetstream().pull_subscribe_bind(
            bus.pool_consumer("chromium"), stream=bus.STREAM
        )
        messages = await psub.fetch(batch=1, timeout=5)
        result = result_to_pb(ok_result(messages[0].data))
        first = await link.ReportResults(
            node_link_pb2.ReportResultsRequest(node_id="peer", results=[result]), timeout=5
        )
        again = await link.ReportResults(
            node_link_pb2.ReportResultsRequest(node_id="peer", results=[result, result]), timeout=5
        )
    finally:
        await nc.close()
    assert [s.new for s in first.stored] == [True]
    assert [s.new for s in again.stored] == [False]
    current = (await api.GetRun(runs_pb2.GetRunRequest(run_id=run.id), timeout=5)).run
    assert (current.counters.succeeded, current.counters.in_flight) == (1, 1)
    assert current.status == runs_pb2.RUN_STATUS_RUNNING


async def test_malformed_spec_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    """Negative sessions and non-http targets come back as INVALID_ARGUMENT naming the field."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    cases = {
        "spec.sessions": runs_pb2.RunSpec(targets=["http://127.0.0.1/"], sessions=-1),
        "spec.targets[0]": runs_pb2.RunSpec(targets=["file:///etc/passwd"], sessions=1),
    }
    for field, bad in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.CreateRun(runs_pb2.CreateRunRequest(spec=bad), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith(field)
    # The service is still serving after refusing.
    assert (await api.ListRuns(runs_pb2.ListRunsRequest(), timeout=5)).runs == []


async def test_bad_node_reports_are_refused_not_crashing(channel: grpc.aio.Channel) -> None:
    """A result without a job id or with attempt 0 is INVALID_ARGUMENT; unknown jobs are dropped."""
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    for bad, field in (
        (
            node_link_pb2.ReportResultsRequest(node_id="n", results=[{"attempt": 1}]),
            "results[0].job_id",
        ),
        (
            node_link_pb2.ReportResultsRequest(
                node_id="n", results=[{"job_id": "x", "attempt": 0}]
            ),
            "results[0].attempt",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await link.ReportResults(bad, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith(field)
    unknown = node_link_pb2.ReportResultsRequest(
        node_id="n", results=[{"job_id": "nope-1", "run_id": "nope", "attempt": 1, "outcome": 1}]
    )
    response = await link.ReportResults(unknown, timeout=5)
    assert [s.new for s in response.stored] == [False]


async def test_silent_node_is_lost_and_gets_no_work(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """A node that stops heartbeating is marked lost and its capacity is withdrawn."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await register(link, slots=4)
    assert scheduler.registry.capacity("chromium") == 4
    for _ in range(100):
        nodes = (await api.ListNodes(nodes_pb2.ListNodesRequest(), timeout=5)).nodes
        if nodes[0].state == nodes_pb2.NODE_STATE_LOST:
            break
        await asyncio.sleep(0.05)
    assert nodes[0].state == nodes_pb2.NODE_STATE_LOST
    assert scheduler.registry.capacity("chromium") == 0
    run = (await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec(5), start=True), timeout=5)).run
    await asyncio.sleep(0.5)
    current = (await api.GetRun(runs_pb2.GetRunRequest(run_id=run.id), timeout=5)).run
    assert current.counters.dispatched == 0
    beat = await link.Heartbeat(
        node_link_pb2.HeartbeatRequest(node_id="peer", state=nodes_pb2.NODE_STATE_READY, slots=4),
        timeout=5,
    )
    assert beat.known
    assert scheduler.registry.capacity("chromium") == 4


async def test_watch_run_streams_to_completion(
    scheduler: SchedulerService, channel: grpc.aio.Channel, nats_server: EmbeddedNatsServer
) -> None:
    """WatchRun yields a snapshot, then updates, and ends with the completed run."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await register(link, slots=5)
    run = (await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec(5), start=True), timeout=5)).run
    seen: list[runs_pb2.Run] = []

    async def watch() -> None:
        async for update in api.WatchRun(runs_pb2.WatchRunRequest(run_id=run.id), timeout=30):
            seen.append(update.run)

    watcher = asyncio.create_task(watch())
    nc = await nats.connect(nats_server.url)
    try:
        psub = await nc.jetstream().pull_subscribe_bind(
            bus.pool_consumer("chromium"), stream=bus.STREAM
        )
        got = 0
        while got < 5:
            messages = await psub.fetch(batch=5, timeout=5)
            await link.ReportResults(
                node_link_pb2.ReportResultsRequest(
                    node_id="peer", results=[result_to_pb(ok_result(m.data)) for m in messages]
                ),
                timeout=5,
            )
            got += len(messages)
    finally:
        await nc.close()
    await asyncio.wait_for(watcher, 10)
    assert seen[-1].status == runs_pb2.RUN_STATUS_COMPLETED
    assert seen[-1].counters.succeeded == 5
    assert len(seen) >= 2


async def test_overdue_job_is_recovered_as_next_attempt(
    scheduler: SchedulerService, channel: grpc.aio.Channel, nats_server: EmbeddedNatsServer
) -> None:
    """A job not reported by its deadline comes back as attempt 2 (then dead); in-progress reports hold it."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await register(link, slots=2)
    limits = runs_pb2.Limits(session_timeout=duration_pb2.Duration(seconds=1))
    retry = runs_pb2.RetryPolicy(max_attempts=2)
    run = (
        await api.CreateRun(
            runs_pb2.CreateRunRequest(spec=spec(2, limits=limits, retry=retry), start=True),
            timeout=5,
        )
    ).run
    holding = True

    async def keep_alive(job_id: str) -> None:
        # A node working on a long session: heartbeats plus in-progress reports.
        while True:
            if holding:
                await link.ReportInProgress(
                    node_link_pb2.ReportInProgressRequest(node_id="peer", job_ids=[job_id]),
                    timeout=5,
                )
            await link.Heartbeat(
                node_link_pb2.HeartbeatRequest(
                    node_id="peer", state=nodes_pb2.NODE_STATE_READY, slots=2
                ),
                timeout=5,
            )
            await asyncio.sleep(0.2)

    nc = await nats.connect(nats_server.url)
    try:
        psub = await nc.jetstream().pull_subscribe_bind(
            bus.pool_consumer("chromium"), stream=bus.STREAM
        )
        messages = await psub.fetch(batch=2, timeout=5)
        for message in messages:
            await message.ack()
        kept, lost = sorted((envelope_from_bytes(m.data) for m in messages), key=lambda e: e.index)
        alive = asyncio.create_task(keep_alive(kept.job_id))
        retried = [envelope_from_bytes(m.data) for m in await acked(psub.fetch(batch=2, timeout=8))]
        assert [(e.job_id, e.attempt) for e in retried] == [(lost.job_id, 2)]
        holding = False
        assert not alive.done(), alive.exception()
        again = [envelope_from_bytes(m.data) for m in await acked(psub.fetch(batch=2, timeout=8))]
        assert [(e.job_id, e.attempt) for e in again] == [(kept.job_id, 2)]
    finally:
        alive.cancel()
        await nc.close()
    for _ in range(100):
        current = (await api.GetRun(runs_pb2.GetRunRequest(run_id=run.id), timeout=5)).run
        if current.counters.dead == 1:
            break
        await asyncio.sleep(0.1)
    assert (current.counters.dead, current.counters.failed) == (1, 1)
    dead = await api.ListJobs(
        runs_pb2.ListJobsRequest(run_id=run.id, statuses=[runs_pb2.JOB_STATUS_DEAD]), timeout=5
    )
    assert [(job.id, job.attempt, job.outcome) for job in dead.jobs] == [
        (lost.job_id, 2, common_pb2.OUTCOME_LOST)
    ]


async def beat(
    link: node_link_pb2_grpc.NodeLinkServiceStub, state: int, *, slots: int = 4
) -> node_link_pb2.HeartbeatResponse:
    return await link.Heartbeat(
        node_link_pb2.HeartbeatRequest(node_id="peer", state=state, slots=slots), timeout=5
    )


async def test_cordon_withdraws_capacity_across_heartbeats_until_uncordoned(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """A cordon takes the node's slots out of capacity, survives `ready` heartbeats, uncordon restores."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await register(link, slots=4)
    node = (await api.CordonNode(nodes_pb2.CordonNodeRequest(node_id="peer"), timeout=5)).node
    assert node.state == nodes_pb2.NODE_STATE_CORDONED
    assert scheduler.registry.capacity("chromium") == 0
    # The node has not heard yet: it still says ready, and is told to cordon until it says so.
    reply = await beat(link, nodes_pb2.NODE_STATE_READY)
    assert [c.WhichOneof("command") for c in reply.commands] == ["cordon"]
    assert reply.commands[0].cordon is True
    assert scheduler.registry.capacity("chromium") == 0
    reply = await beat(link, nodes_pb2.NODE_STATE_CORDONED)
    assert list(reply.commands) == []
    await register(link, slots=4)  # a node that restarts stays cordoned
    assert scheduler.registry.capacity("chromium") == 0
    listed = (await api.ListNodes(nodes_pb2.ListNodesRequest(), timeout=5)).nodes
    assert listed[0].state == nodes_pb2.NODE_STATE_CORDONED
    node = (await api.UncordonNode(nodes_pb2.UncordonNodeRequest(node_id="peer"), timeout=5)).node
    assert node.state == nodes_pb2.NODE_STATE_READY
    assert scheduler.registry.capacity("chromium") == 4
    reply = await beat(link, nodes_pb2.NODE_STATE_CORDONED)
    assert [(c.WhichOneof("command"), c.cordon) for c in reply.commands] == [("cordon", False)]
    assert scheduler.registry.capacity("chromium") == 4
    reply = await beat(link, nodes_pb2.NODE_STATE_READY)
    assert list(reply.commands) == [] and scheduler.registry.capacity("chromium") == 4


async def test_drain_reaches_the_node_and_ends_drained(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """DrainNode is sent with heartbeats until the node drains; drained stays out; uncordon resumes."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await register(link, slots=4)
    node = (await api.DrainNode(nodes_pb2.DrainNodeRequest(node_id="peer"), timeout=5)).node
    assert node.state == nodes_pb2.NODE_STATE_DRAINING
    assert scheduler.registry.capacity("chromium") == 0
    reply = await beat(link, nodes_pb2.NODE_STATE_READY)
    assert [(c.WhichOneof("command"), c.drain) for c in reply.commands] == [("drain", True)]
    reply = await beat(link, nodes_pb2.NODE_STATE_DRAINING)
    assert list(reply.commands) == []
    await beat(link, nodes_pb2.NODE_STATE_DRAINED)
    listed = (await api.ListNodes(nodes_pb2.ListNodesRequest(), timeout=5)).nodes
    assert listed[0].state == nodes_pb2.NODE_STATE_DRAINED
    assert scheduler.registry.capacity("chromium") == 0
    await api.UncordonNode(nodes_pb2.UncordonNodeRequest(node_id="peer"), timeout=5)
    reply = await beat(link, nodes_pb2.NODE_STATE_DRAINED)
    assert [(c.WhichOneof("command"), c.cordon) for c in reply.commands] == [("cordon", False)]
    assert scheduler.registry.capacity("chromium") == 4


async def test_cordon_of_unknown_node_is_not_found(channel: grpc.aio.Channel) -> None:
    """Cordon, drain and uncordon of a node never registered answer NOT_FOUND; no id is INVALID."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    calls = (
        (api.CordonNode, nodes_pb2.CordonNodeRequest),
        (api.DrainNode, nodes_pb2.DrainNodeRequest),
        (api.UncordonNode, nodes_pb2.UncordonNodeRequest),
    )
    for call, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request(node_id="nobody"), timeout=5)  # type: ignore[operator]
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "nobody" in (caught.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.CordonNode(nodes_pb2.CordonNodeRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_run_no_node_can_serve_says_why_it_waits(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """With only a chromium node, a webkit run is running but says "no node serves
    engine=webkit"; a chromium run beside it says nothing of the kind."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await register(link, slots=1)
    webkit = (
        await api.CreateRun(
            runs_pb2.CreateRunRequest(spec=spec(2, engine=common_pb2.ENGINE_WEBKIT), start=True),
            timeout=5,
        )
    ).run
    chromium = (
        await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec(2), start=True), timeout=5)
    ).run
    # A heartbeat now: the fixture's scheduler counts a silent node lost after 1 s.
    await link.Heartbeat(
        node_link_pb2.HeartbeatRequest(node_id="peer", state=nodes_pb2.NODE_STATE_READY, slots=1),
        timeout=5,
    )
    got = (await api.GetRun(runs_pb2.GetRunRequest(run_id=webkit.id), timeout=5)).run
    assert got.status == runs_pb2.RUN_STATUS_RUNNING
    assert got.waiting_reason == "no node serves engine=webkit"
    other = (await api.GetRun(runs_pb2.GetRunRequest(run_id=chromium.id), timeout=5)).run
    assert other.waiting_reason == ""

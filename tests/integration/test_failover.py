"""Schedulers that fail over on PostgreSQL (one leader by a lease, fenced writes, standbys that
name the leader), nodes and gateways that follow it, and SQLite staying single-scheduler."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import nats
import pytest
from sqlalchemy import text

from services.common.config import GatewaySettings, SchedulerSettings
from services.common.errors import FailedPrecondition
from services.common.leader import LEADER_KEY, STANDBY_KEY, LeaderChannels
from services.common.nats_server import EmbeddedNatsServer
from services.gateway.server import GatewayService
from services.scheduler import SchedulerService
from services.scheduler._lease import NotLeader
from smartfleet.v1 import fleet_service_pb2_grpc, node_link_pb2_grpc, runs_pb2
from tests.conftest import POSTGRES_URL, postgres_available
from tests.integration.test_lifecycle import Peer
from tests.integration.test_scheduler import register, wait_for_status

pytestmark = pytest.mark.timeout(90)

LEASE = timedelta(seconds=2)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A PostgreSQL database of its own, dropped afterwards."""
    if not postgres_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import asyncpg

    admin_dsn = POSTGRES_URL.replace("postgresql+asyncpg", "postgresql")
    name = f"sf_ha_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _settings(nats_url: str, database_url: str, **extra: object) -> SchedulerSettings:
    return SchedulerSettings(
        scheduler_listen="127.0.0.1:0",
        database_url=database_url,
        database_upgrade=True,
        nats_url=nats_url,
        ack_wait=timedelta(seconds=5),
        leader_lease=LEASE,
        heartbeat_interval=timedelta(milliseconds=200),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def pair(
    nats_server: EmbeddedNatsServer, postgres_url: str
) -> AsyncIterator[tuple[SchedulerService, SchedulerService]]:
    """Two schedulers on one database: the first started leads, the second is its standby."""
    first = SchedulerService(_settings(nats_server.url, postgres_url))
    await first.start()
    second = SchedulerService(_settings(nats_server.url, postgres_url))
    await second.start()
    try:
        yield first, second
    finally:
        await second.stop(grace=timedelta(seconds=0.2))
        await first.stop(grace=timedelta(seconds=0.2))


async def _until(condition: object, *, timeout: float) -> float:
    """Seconds until `condition()` holds (fails the test after `timeout`)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not condition():  # type: ignore[operator]
        if loop.time() - began > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.05)
    return loop.time() - began


async def test_one_leads_and_the_standby_serves_reads_and_names_it_for_writes(
    pair: tuple[SchedulerService, SchedulerService],
) -> None:
    """The first scheduler leads, the second does not; the standby answers GetRun from the
    database and refuses CreateRun and node registration with UNAVAILABLE naming the leader."""
    leader, standby = pair
    assert leader.is_leader and not standby.is_leader
    async with (
        grpc.aio.insecure_channel(leader.address) as to_leader,
        grpc.aio.insecure_channel(standby.address) as to_standby,
    ):
        run = (
            await fleet_service_pb2_grpc.FleetServiceStub(to_leader).CreateRun(
                runs_pb2.CreateRunRequest(
                    spec=runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=1)
                ),
                timeout=5,
            )
        ).run
        api = fleet_service_pb2_grpc.FleetServiceStub(to_standby)
        read = (await api.GetRun(runs_pb2.GetRunRequest(run_id=run.id), timeout=5)).run
        assert read.id == run.id
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.CreateRun(runs_pb2.CreateRunRequest(spec=run.spec), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        metadata = dict(refused.value.trailing_metadata() or ())
        assert metadata[STANDBY_KEY] == "1"
        assert metadata[LEADER_KEY] == leader.address
        with pytest.raises(grpc.aio.AioRpcError) as node_refused:
            await register(node_link_pb2_grpc.NodeLinkServiceStub(to_standby), slots=1)
        assert dict(node_refused.value.trailing_metadata() or ())[LEADER_KEY] == leader.address
        # Only the leader's runs list one run: the standby wrote nothing.
        listed = await api.ListRuns(runs_pb2.ListRunsRequest(), timeout=5)
        assert [r.id for r in listed.runs] == [run.id]


async def test_clients_given_both_addresses_follow_the_leader(
    pair: tuple[SchedulerService, SchedulerService], tmp_path: Path
) -> None:
    """A gateway and a node link listing the standby first still write to the leader."""
    leader, standby = pair
    gateway = GatewayService(
        GatewaySettings(
            gateway_listen="127.0.0.1:0",
            scheduler_addr=f"{standby.address},{leader.address}",
            gateway_tokens="t",
        )
    )
    address = await gateway.start()
    channels = LeaderChannels([standby.address, leader.address])
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            fleet = fleet_service_pb2_grpc.FleetServiceStub(channel)
            run = (
                await fleet.CreateRun(
                    runs_pb2.CreateRunRequest(
                        spec=runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=1)
                    ),
                    metadata=(("authorization", "Bearer t"),),
                    timeout=10,
                )
            ).run
        assert run.id
        await channels.call(
            lambda link: register(link, slots=2),
            stub=node_link_pb2_grpc.NodeLinkServiceStub,
            timeout=timedelta(seconds=5),
        )
        assert channels.current == leader.address
        assert [node.info.node_id for node in leader.registry.nodes()] == ["peer"]
    finally:
        await channels.close()
        await gateway.stop(grace=0.2)


async def test_the_standby_takes_over_and_sends_what_was_out_once(
    pair: tuple[SchedulerService, SchedulerService], nats_server: EmbeddedNatsServer
) -> None:
    """The leader dispatches 4 jobs and stops (lease released); the standby leads within the
    lease, rebuilds the node and its credit, republishes (the stream drops the copies), and the
    run completes with each job at attempt 1."""
    leader, standby = pair
    nc = await nats.connect(nats_server.url)
    try:
        async with grpc.aio.insecure_channel(leader.address) as channel:
            await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=4)
            api = fleet_service_pb2_grpc.FleetServiceStub(channel)
            spec = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=4)
            run = (
                await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec, start=True), timeout=5)
            ).run
            await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_RUNNING)
            await _until(lambda: leader.ledger.outstanding("chromium") == 4, timeout=10)
        await leader.stop(grace=timedelta(seconds=0.2))
        took = await _until(lambda: standby.is_leader, timeout=LEASE.total_seconds() * 3)
        async with grpc.aio.insecure_channel(standby.address) as channel:
            link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
            await _until(lambda: standby.leadership.accepting, timeout=10)
            # Known from the nodes table: the heartbeat is enough, no new registration.
            assert standby.ledger.outstanding("chromium") == 4
            peer = Peer(nc.jetstream(), link)
            envelopes = await peer.collect(4, timeout=10)
            assert sorted((e.index, e.attempt) for e in envelopes) == [(i, 1) for i in range(4)]
            await peer.report(envelopes)
            api = fleet_service_pb2_grpc.FleetServiceStub(channel)
            await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)
            jobs = await api.ListJobs(runs_pb2.ListJobsRequest(run_id=run.id), timeout=5)
            assert [(j.status, j.attempt) for j in jobs.jobs] == [
                (runs_pb2.JOB_STATUS_SUCCEEDED, 1)
            ] * 4
            assert await peer.fetch(timeout=1.0) == []
        assert took < LEASE.total_seconds() * 3
    finally:
        await nc.close()


async def test_a_deposed_leader_cannot_write(
    pair: tuple[SchedulerService, SchedulerService],
) -> None:
    """The leader stops renewing (a long pause); once its lease expires the standby takes over
    with a higher token, and the old leader's next write is refused by the fence."""
    leader, standby = pair
    # Freeze the leader's campaign, as a process paused for longer than the lease would be.
    assert leader.leadership._task is not None
    leader.leadership._task.cancel()
    await _until(lambda: standby.is_leader, timeout=LEASE.total_seconds() * 4)
    assert (standby.parts.lease.token or 0) > (leader.parts.lease.token or 0)
    with pytest.raises(NotLeader):
        async with leader.parts.db.write() as session:
            await session.execute(text("SELECT 1"))
    # The new leader writes as usual.
    async with standby.parts.db.write() as session:
        await session.execute(text("SELECT 1"))


async def test_a_second_scheduler_on_one_sqlite_file_refuses_to_start(
    nats_server: EmbeddedNatsServer, sqlite_url: str
) -> None:
    """SQLite stays single-scheduler: the second one on the same file fails at start, saying
    so and pointing at PostgreSQL; after the first stops, a new one starts."""
    first = SchedulerService(_settings(nats_server.url, sqlite_url))
    await first.start()
    try:
        second = SchedulerService(_settings(nats_server.url, sqlite_url))
        with pytest.raises(FailedPrecondition) as refused:
            await second.start()
        await second.stop()
        assert "SQLite runs one scheduler only" in refused.value.message
        assert "PostgreSQL" in refused.value.message
    finally:
        await first.stop(grace=timedelta(seconds=0.2))
    third = SchedulerService(_settings(nats_server.url, sqlite_url))
    await third.start()
    assert third.is_leader
    await third.stop(grace=timedelta(seconds=0.2))


async def test_replicas_beyond_the_cluster_are_refused_at_start(
    nats_server: EmbeddedNatsServer, sqlite_url: str
) -> None:
    """SMARTFLEET_NATS_REPLICAS=3 against one non-clustered server fails at start with an
    error that names the setting and what to do."""
    service = SchedulerService(_settings(nats_server.url, sqlite_url, nats_replicas=3))
    with pytest.raises(FailedPrecondition) as refused:
        await service.start()
    await service.stop()
    assert "SMARTFLEET_NATS_REPLICAS=3" in refused.value.message
    assert "cluster" in refused.value.message

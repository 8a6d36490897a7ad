"""Crash-consistent dispatch: jobs a scheduler claimed but never published go out at its next
start, under their first attempt, and jobs it did publish are not sent twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import grpc
import nats
import pytest

from services.common.config import SchedulerSettings
from services.common.nats_server import EmbeddedNatsServer
from services.scheduler import SchedulerService
from smartfleet.v1 import fleet_service_pb2_grpc, node_link_pb2_grpc, runs_pb2
from tests.integration.test_lifecycle import Peer
from tests.integration.test_scheduler import register, wait_for_status

pytestmark = pytest.mark.timeout(90)


def _settings(nats_url: str, database_url: str) -> SchedulerSettings:
    return SchedulerSettings(
        scheduler_listen="127.0.0.1:0",
        database_url=database_url,
        database_upgrade=True,
        nats_url=nats_url,
        ack_wait=timedelta(seconds=5),
    )


async def _dispatched(
    api: fleet_service_pb2_grpc.FleetServiceStub, run_id: str
) -> list[runs_pb2.Job]:
    reply = await api.ListJobs(runs_pb2.ListJobsRequest(run_id=run_id), timeout=5)
    return [job for job in reply.jobs if job.status == runs_pb2.JOB_STATUS_DISPATCHED]


async def test_claimed_but_unpublished_jobs_go_out_at_the_next_start(
    tmp_path: Path, sqlite_url: str
) -> None:
    """NATS goes away, a run's 3 jobs are claimed (their publishes fail and live only in the
    scheduler's memory), the scheduler stops; the next scheduler on the same database
    publishes all 3 as attempt 1, and the run completes without a second attempt."""
    (tmp_path / "nats").mkdir()
    nats_server = EmbeddedNatsServer(tmp_path / "nats")
    await nats_server.start()
    first = SchedulerService(_settings(nats_server.url, sqlite_url))
    await first.start()
    async with grpc.aio.insecure_channel(first.address) as channel:
        await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=3)
        await nats_server.stop()
        api = fleet_service_pb2_grpc.FleetServiceStub(channel)
        spec = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=3)
        run = (await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec, start=True), timeout=5)).run
        for _ in range(100):
            if len(await _dispatched(api, run.id)) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(await _dispatched(api, run.id)) == 3
    await first.stop(grace=timedelta(seconds=0.2))

    await nats_server.start()
    second = SchedulerService(_settings(nats_server.url, sqlite_url))
    await second.start()
    nc = await nats.connect(nats_server.url)
    try:
        async with grpc.aio.insecure_channel(second.address) as channel:
            link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
            await register(link, slots=3)
            peer = Peer(nc.jetstream(), link)
            envelopes = await peer.collect(3, timeout=10)
            assert sorted((e.index, e.attempt) for e in envelopes) == [(0, 1), (1, 1), (2, 1)]
            await peer.report(envelopes)
            api = fleet_service_pb2_grpc.FleetServiceStub(channel)
            await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)
            jobs = await api.ListJobs(runs_pb2.ListJobsRequest(run_id=run.id), timeout=5)
            assert [(job.status, job.attempt) for job in jobs.jobs] == [
                (runs_pb2.JOB_STATUS_SUCCEEDED, 1)
            ] * 3
            # Nothing more is on the bus for the run.
            assert await peer.fetch(timeout=1.0) == []
    finally:
        await nc.close()
        await second.stop(grace=timedelta(seconds=0.2))
        await nats_server.stop()


async def test_a_restart_does_not_send_published_jobs_twice(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Jobs published before a restart are republished at start, and the stream's duplicate
    window drops the copies: a node receives each job once."""
    (tmp_path / "nats").mkdir()
    nats_server = EmbeddedNatsServer(tmp_path / "nats")
    await nats_server.start()
    nc = await nats.connect(nats_server.url)
    try:
        first = SchedulerService(_settings(nats_server.url, sqlite_url))
        await first.start()
        async with grpc.aio.insecure_channel(first.address) as channel:
            await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=4)
            api = fleet_service_pb2_grpc.FleetServiceStub(channel)
            spec = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=4)
            run = (
                await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec, start=True), timeout=5)
            ).run
            for _ in range(100):
                if len(await _dispatched(api, run.id)) == 4:
                    break
                await asyncio.sleep(0.05)
        await first.stop(grace=timedelta(seconds=0.2))
        second = SchedulerService(_settings(nats_server.url, sqlite_url))
        await second.start()
        try:
            async with grpc.aio.insecure_channel(second.address) as channel:
                link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
                await register(link, slots=4)
                peer = Peer(nc.jetstream(), link)
                envelopes = await peer.collect(4, timeout=10)
                assert sorted(e.index for e in envelopes) == [0, 1, 2, 3]
                assert await peer.fetch(timeout=1.0) == []
        finally:
            await second.stop(grace=timedelta(seconds=0.2))
    finally:
        await nc.close()
        await nats_server.stop()

"""Crash-consistent dispatch: jobs a scheduler claimed but never published go out at its next
start, under their first attempt, and jobs it did publish are not sent twice; a scheduler
process killed with -9 at any moment costs the restart, never an attempt."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import nats
import pytest

from bench._service import ServiceProcess
from services.common import bus
from services.common.config import SchedulerSettings
from services.common.contracts import envelope_from_bytes, result_to_pb
from services.common.nats_server import EmbeddedNatsServer
from services.common.types import ErrorClass, Outcome, SessionResult
from services.scheduler import SchedulerService
from smartfleet.v1 import (
    fleet_service_pb2_grpc,
    node_link_pb2,
    node_link_pb2_grpc,
    nodes_pb2,
    runs_pb2,
)
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


def _process(tmp_path: Path, name: str, nats_url: str, database_url: str) -> ServiceProcess:
    return ServiceProcess(
        "services.scheduler",
        env={
            "SMARTFLEET_SCHEDULER_LISTEN": "127.0.0.1:0",
            "SMARTFLEET_DATABASE_URL": database_url,
            "SMARTFLEET_DATABASE_UPGRADE": "true",
            "SMARTFLEET_NATS_URL": nats_url,
            "SMARTFLEET_ACK_WAIT": "5s",
        },
        workdir=tmp_path / "procs",
        name=name,
    )


async def test_claimed_but_unpublished_jobs_go_out_at_the_next_start(
    tmp_path: Path, sqlite_url: str
) -> None:
    """NATS goes away, a run's 3 jobs are claimed (their publishes fail and live only in the
    scheduler's memory), the scheduler process is killed -9; the next one on the same database
    publishes all 3 as attempt 1, and the run completes without a second attempt."""
    (tmp_path / "nats").mkdir()
    nats_server = EmbeddedNatsServer(tmp_path / "nats")
    await nats_server.start()
    first = _process(tmp_path, "first", nats_server.url, sqlite_url)
    second: ServiceProcess | None = None
    try:
        address = (await first.start())["scheduler"]
        async with grpc.aio.insecure_channel(address) as channel:
            await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=3)
            await nats_server.stop()
            api = fleet_service_pb2_grpc.FleetServiceStub(channel)
            spec = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=3)
            run = (
                await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec, start=True), timeout=5)
            ).run
            for _ in range(100):
                if len(await _dispatched(api, run.id)) == 3:
                    break
                await asyncio.sleep(0.05)
            assert len(await _dispatched(api, run.id)) == 3
        await first.kill()

        await nats_server.start()
        second = _process(tmp_path, "second", nats_server.url, sqlite_url)
        address = (await second.start())["scheduler"]
        nc = await nats.connect(nats_server.url)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
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
    finally:
        await first.kill()
        if second is not None:
            await second.stop()
        await nats_server.stop()


class _AckingPeer:
    """Works the chromium pool as a node does: report, and ack only what the scheduler stored;
    what it could not report (the scheduler is down) is reported again, then acked."""

    def __init__(self, js: nats.js.JetStreamContext) -> None:
        self._js = js
        self.link: node_link_pb2_grpc.NodeLinkServiceStub | None = None
        self.reported = 0

    async def work(self) -> None:
        sub = await self._js.pull_subscribe_bind(bus.pool_consumer("chromium"), stream=bus.STREAM)
        waiting: list[nats.aio.msg.Msg] = []
        while True:
            with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                waiting += await sub.fetch(batch=100, timeout=0.5)
            if not waiting or self.link is None:
                continue
            results = [_ok(envelope_from_bytes(message.data)) for message in waiting]
            try:
                reply = await self.link.ReportResults(
                    node_link_pb2.ReportResultsRequest(node_id="peer", results=results), timeout=2
                )
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
                continue
            stored = {(s.job_id, s.attempt) for s in reply.stored}
            for message in waiting:
                envelope = envelope_from_bytes(message.data)
                if (envelope.job_id, envelope.attempt) in stored:
                    await message.ack()
            self.reported += len(stored)
            waiting = []


def _ok(envelope: bus.JobEnvelope) -> node_link_pb2.SessionResult:
    now = datetime.now(UTC)
    return result_to_pb(
        SessionResult(
            job_id=envelope.job_id,
            attempt=envelope.attempt,
            run_id=envelope.run_id,
            index=envelope.index,
            outcome=Outcome.OK,
            error_class=ErrorClass.NONE,
            started_at=now,
            finished_at=now,
            duration_ms=1.0,
            node_id="peer",
            engine="chromium",
            http_status=200,
        )
    )


async def test_a_scheduler_killed_mid_dispatch_strands_nothing(
    tmp_path: Path, sqlite_url: str, nats_server: EmbeddedNatsServer
) -> None:
    """A scheduler process dispatching and storing results at full speed is killed -9 part way;
    the next one on the same database finishes the run: every job succeeded at attempt 1."""
    sessions = 1500
    first = _process(tmp_path, "first", nats_server.url, sqlite_url)
    second = _process(tmp_path, "second", nats_server.url, sqlite_url)
    nc = await nats.connect(nats_server.url)
    peer = _AckingPeer(nc.jetstream())
    working: asyncio.Task[None] | None = None
    first_channel: grpc.aio.Channel | None = None
    try:
        address = (await first.start())["scheduler"]
        # Left open until the end: closing a channel cancels the calls on it, and the peer
        # would see its report to the killed scheduler cancelled rather than failed.
        first_channel = grpc.aio.insecure_channel(address)
        peer.link = node_link_pb2_grpc.NodeLinkServiceStub(first_channel)
        await register(peer.link, slots=200)
        working = asyncio.create_task(peer.work())
        api = fleet_service_pb2_grpc.FleetServiceStub(first_channel)
        spec = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=sessions)
        run = (await api.CreateRun(runs_pb2.CreateRunRequest(spec=spec, start=True), timeout=5)).run
        for _ in range(600):
            if peer.reported >= sessions // 4:
                break
            await asyncio.sleep(0.02)
        await first.kill()
        peer.link = None
        assert 0 < peer.reported < sessions, "the kill came in the middle of the run"
        address = (await second.start())["scheduler"]
        async with grpc.aio.insecure_channel(address) as channel:
            link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
            # The node heartbeats the new scheduler, which knows it from the nodes table once it
            # leads (it serves, then takes the lease and loads the table): until then, again.
            for _ in range(100):
                beat = await link.Heartbeat(
                    node_link_pb2.HeartbeatRequest(
                        node_id="peer", state=nodes_pb2.NODE_STATE_READY, slots=200
                    ),
                    timeout=5,
                )
                if beat.known:
                    break
                await asyncio.sleep(0.05)
            assert beat.known

            async def keep_beating() -> None:
                while True:
                    await asyncio.sleep(1)
                    await link.Heartbeat(
                        node_link_pb2.HeartbeatRequest(
                            node_id="peer", state=nodes_pb2.NODE_STATE_READY, slots=200
                        ),
                        timeout=5,
                    )

            beating = asyncio.create_task(keep_beating())
            peer.link = link
            api = fleet_service_pb2_grpc.FleetServiceStub(channel)
            for _ in range(600):
                got = (await api.GetRun(runs_pb2.GetRunRequest(run_id=run.id), timeout=5)).run
                if got.status == runs_pb2.RUN_STATUS_COMPLETED:
                    break
                await asyncio.sleep(0.05)
            assert got.status == runs_pb2.RUN_STATUS_COMPLETED, (
                got.counters,
                peer.reported,
                working.done() and working.exception(),
            )
            assert got.counters.succeeded == sessions
            jobs = await api.ListJobs(
                runs_pb2.ListJobsRequest(run_id=run.id, page_size=sessions), timeout=10
            )
            beating.cancel()
            assert len(jobs.jobs) == sessions
            assert {(job.status, job.attempt) for job in jobs.jobs} == {
                (runs_pb2.JOB_STATUS_SUCCEEDED, 1)
            }
    finally:
        if working is not None:
            working.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await working
        if first_channel is not None:
            await first_channel.close()
        await nc.close()
        await first.kill()
        await second.stop()


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

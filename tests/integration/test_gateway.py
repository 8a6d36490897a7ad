"""The gateway in front of a real scheduler: bearer tokens, forwarding, shared WatchRun streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import GatewaySettings, SchedulerSettings
from services.common.nats_server import EmbeddedNatsServer
from services.gateway import GatewayService
from services.gateway._auth import token_digest
from services.scheduler import SchedulerService
from smartfleet.v1 import fleet_service_pb2_grpc, runs_pb2

pytestmark = pytest.mark.timeout(60)
TOKEN = "test-token-1"


@pytest.fixture
async def gateway(nats_server: EmbeddedNatsServer, sqlite_url: str) -> AsyncIterator[str]:
    scheduler = SchedulerService(
        SchedulerSettings(
            scheduler_listen="127.0.0.1:0",
            database_url=sqlite_url,
            database_upgrade=True,
            nats_url=nats_server.url,
        )
    )
    await scheduler.start()
    # One plain token and one configured only by its hash.
    gateway = GatewayService(
        GatewaySettings(
            gateway_listen="127.0.0.1:0",
            scheduler_addr=scheduler.address,
            gateway_tokens=f"{TOKEN},sha256:{token_digest('hashed-token')}",
        )
    )
    address = await gateway.start()
    try:
        yield address
    finally:
        await gateway.stop(0.5)
        await scheduler.stop(timedelta(seconds=0.5))


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_missing_or_wrong_token_is_unauthenticated(gateway: str) -> None:
    """Unary and streaming calls without a token, or with a wrong one, get UNAUTHENTICATED."""
    async with grpc.aio.insecure_channel(gateway) as channel:
        fleet = fleet_service_pb2_grpc.FleetServiceStub(channel)
        for metadata in ((), auth("wrong"), (("authorization", "Basic abc"),)):
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await fleet.ListRuns(runs_pb2.ListRunsRequest(), metadata=metadata, timeout=5)
            assert unary.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as streaming:
                async for _ in fleet.WatchRun(
                    runs_pb2.WatchRunRequest(run_id="x"), metadata=metadata, timeout=5
                ):
                    pass
            assert streaming.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_valid_tokens_reach_the_scheduler(gateway: str) -> None:
    """A plain and a hash-configured token both work; scheduler errors keep their status."""
    async with grpc.aio.insecure_channel(gateway) as channel:
        fleet = fleet_service_pb2_grpc.FleetServiceStub(channel)
        spec = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=3)
        run = (
            await fleet.CreateRun(
                runs_pb2.CreateRunRequest(spec=spec), metadata=auth(TOKEN), timeout=5
            )
        ).run
        listed = await fleet.ListRuns(
            runs_pb2.ListRunsRequest(), metadata=auth("hashed-token"), timeout=5
        )
        assert [r.id for r in listed.runs] == [run.id]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await fleet.GetRun(
                runs_pb2.GetRunRequest(run_id="nope"), metadata=auth(TOKEN), timeout=5
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            bad = runs_pb2.RunSpec(targets=["http://127.0.0.1/"], sessions=0)
            await fleet.CreateRun(
                runs_pb2.CreateRunRequest(spec=bad), metadata=auth(TOKEN), timeout=5
            )
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (invalid.value.details() or "").startswith("spec.sessions")


async def test_health_is_open_and_serving(gateway: str) -> None:
    """gRPC health checking answers without a token."""
    async with grpc.aio.insecure_channel(gateway) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_many_watchers_share_a_run_feed(gateway: str) -> None:
    """Twenty watchers of one draft run each get its snapshot; starting it reaches all of them."""
    async with grpc.aio.insecure_channel(gateway) as channel:
        fleet = fleet_service_pb2_grpc.FleetServiceStub(channel)
        spec = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=1)
        run = (
            await fleet.CreateRun(
                runs_pb2.CreateRunRequest(spec=spec), metadata=auth(TOKEN), timeout=5
            )
        ).run
        statuses: list[list[int]] = [[] for _ in range(20)]
        snapshot_seen = [asyncio.Event() for _ in range(20)]

        async def watch(position: int) -> None:
            call = fleet.WatchRun(
                runs_pb2.WatchRunRequest(run_id=run.id), metadata=auth(TOKEN), timeout=20
            )
            async for update in call:
                statuses[position].append(update.run.status)
                snapshot_seen[position].set()
                if update.run.status == runs_pb2.RUN_STATUS_RUNNING:
                    call.cancel()
                    return

        tasks = [asyncio.create_task(watch(i)) for i in range(20)]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in snapshot_seen)), 10)
        await fleet.StartRun(
            runs_pb2.StartRunRequest(run_id=run.id), metadata=auth(TOKEN), timeout=5
        )
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert all(
            s[0] == runs_pb2.RUN_STATUS_DRAFT and s[-1] == runs_pb2.RUN_STATUS_RUNNING
            for s in statuses
        )

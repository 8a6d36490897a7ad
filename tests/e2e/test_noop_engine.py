"""The benchmark-only noop engine through the real stack: NATS, scheduler on SQLite, gateway, node."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from cli._stack import Stack
from services.common.contracts import engine_name
from smartfleet.v1 import common_pb2, fleet_service_pb2_grpc, nodes_pb2, runs_pb2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# Loopback is always allowlisted; neither engine gets far enough to open it here.
TARGET = "http://127.0.0.1:9/"


def start(
    stack: Stack,
) -> tuple[grpc.aio.Channel, fleet_service_pb2_grpc.FleetServiceStub, tuple[tuple[str, str]]]:
    channel = grpc.aio.insecure_channel(stack.gateway_addr)
    return (
        channel,
        fleet_service_pb2_grpc.FleetServiceStub(channel),
        (("authorization", f"Bearer {stack.token}"),),
    )


async def node_engines(
    api: fleet_service_pb2_grpc.FleetServiceStub, md: tuple[tuple[str, str]]
) -> list[str]:
    """The engines of the stack's one node, once it has registered."""
    for _ in range(120):
        listed = await api.ListNodes(nodes_pb2.ListNodesRequest(), metadata=md, timeout=10)
        if listed.nodes:
            return [engine_name(engine) for engine in listed.nodes[0].info.engines]
        await asyncio.sleep(0.25)
    raise AssertionError("the node never registered")


async def create(
    api: fleet_service_pb2_grpc.FleetServiceStub, md: tuple[tuple[str, str]], spec: runs_pb2.RunSpec
) -> runs_pb2.Run:
    return (
        await api.CreateRun(
            runs_pb2.CreateRunRequest(spec=spec, start=True), metadata=md, timeout=10
        )
    ).run


async def stays_undispatched(
    api: fleet_service_pb2_grpc.FleetServiceStub, md: tuple[tuple[str, str]], run_id: str
) -> runs_pb2.Run:
    """Watch a run for 3 s: nothing of it may be dispatched."""
    for _ in range(12):
        run = (await api.GetRun(runs_pb2.GetRunRequest(run_id=run_id), metadata=md, timeout=10)).run
        assert run.counters.dispatched == 0, run.counters
        await asyncio.sleep(0.25)
    return run


@pytest.fixture
async def noop_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(
        data_dir=tmp_path / "stack",
        gateway_port=0,
        scheduler_port=0,
        node_slots=64,
        node_engine="noop",
    ) as running:
        yield running


async def test_noop_run_completes_through_the_stack(noop_stack: Stack) -> None:
    """A run naming `engine: noop` completes on a noop node: every job stored once, ok, engine noop."""
    channel, api, md = start(noop_stack)
    async with channel:
        assert await node_engines(api, md) == ["noop"]
        run = await create(
            api, md, runs_pb2.RunSpec(targets=[TARGET], sessions=500, engine=common_pb2.ENGINE_NOOP)
        )
        final = None
        async for update in api.WatchRun(
            runs_pb2.WatchRunRequest(run_id=run.id), metadata=md, timeout=120
        ):
            final = update.run
    assert final is not None and final.status == runs_pb2.RUN_STATUS_COMPLETED
    assert (final.counters.succeeded, final.counters.failed) == (500, 0)
    with sqlite3.connect(noop_stack.data_dir / "smartfleet.db") as db:
        rows, jobs, engines, outcomes, unstored, early = db.execute(
            "SELECT count(*), count(DISTINCT job_id), group_concat(DISTINCT engine), "
            "group_concat(DISTINCT outcome), sum(stored_at IS NULL), sum(stored_at < finished_at) "
            "FROM results WHERE run_id = ?",
            (run.id,),
        ).fetchone()
    assert (rows, jobs, engines, outcomes, unstored, early) == (500, 500, "noop", "ok", 0, 0)


async def test_noop_node_does_not_take_a_run_of_the_default_engine(noop_stack: Stack) -> None:
    """A run that names no engine is chromium, which a noop node never takes."""
    channel, api, md = start(noop_stack)
    async with channel:
        await node_engines(api, md)
        run = await create(api, md, runs_pb2.RunSpec(targets=[TARGET], sessions=5))
        assert run.spec.engine == common_pb2.ENGINE_CHROMIUM
        current = await stays_undispatched(api, md, run.id)
    assert current.status == runs_pb2.RUN_STATUS_RUNNING
    assert current.waiting_reason == "no node serves engine=chromium"


@pytest.mark.browser
async def test_chromium_node_does_not_take_noop_jobs(tmp_path: Path) -> None:
    """A stack started without choosing an engine runs a chromium node, and it leaves noop runs alone."""
    async with Stack(
        data_dir=tmp_path / "stack", gateway_port=0, scheduler_port=0, node_slots=2
    ) as stack:
        channel, api, md = start(stack)
        async with channel:
            assert await node_engines(api, md) == ["chromium"]
            run = await create(
                api,
                md,
                runs_pb2.RunSpec(targets=[TARGET], sessions=5, engine=common_pb2.ENGINE_NOOP),
            )
            await stays_undispatched(api, md, run.id)

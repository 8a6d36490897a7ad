"""GetRun at the gateway: shared reads, bounded staleness, no cached errors, auth on every call.

Reads are counted at a small real gRPC server standing in for the scheduler (its GetRun and
WatchRun, with runs the test sets); staleness and own writes are checked against the real one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest

from services.common.config import GatewaySettings, SchedulerSettings
from services.common.nats_server import EmbeddedNatsServer
from services.gateway import GatewayService
from services.scheduler import SchedulerService
from smartfleet.v1 import fleet_service_pb2_grpc, runs_pb2

pytestmark = pytest.mark.timeout(60)
TOKEN = "cache-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
STALENESS = timedelta(milliseconds=250)


class SchedulerStandIn:
    """The scheduler's FleetService GetRun, StartRun and WatchRun over real gRPC; counts reads, may answer
    them slowly."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.runs: dict[str, runs_pb2.Run] = {}
        self.reads = 0
        self.read_arrived = asyncio.Event()
        self.delay = delay
        self._changed = asyncio.Condition()
        self._server = grpc.aio.server()
        self.address = ""

    async def start(self) -> None:
        handlers = {
            "GetRun": grpc.unary_unary_rpc_method_handler(
                self._get_run,
                request_deserializer=runs_pb2.GetRunRequest.FromString,
                response_serializer=runs_pb2.GetRunResponse.SerializeToString,
            ),
            "StartRun": grpc.unary_unary_rpc_method_handler(
                self._start_run,
                request_deserializer=runs_pb2.StartRunRequest.FromString,
                response_serializer=runs_pb2.StartRunResponse.SerializeToString,
            ),
            "WatchRun": grpc.unary_stream_rpc_method_handler(
                self._watch_run,
                request_deserializer=runs_pb2.WatchRunRequest.FromString,
                response_serializer=runs_pb2.WatchRunResponse.SerializeToString,
            ),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("smartfleet.v1.FleetService", handlers),)
        )
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(0)

    async def put(self, run: runs_pb2.Run) -> None:
        async with self._changed:
            self.runs[run.id] = run
            self._changed.notify_all()

    async def _get_run(
        self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.GetRunResponse:
        self.reads += 1
        self.read_arrived.set()
        run = self.runs.get(request.run_id)  # read now, answered after the delay
        await asyncio.sleep(self.delay)
        if run is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"run {request.run_id} not found")
        return runs_pb2.GetRunResponse(run=run)

    async def _start_run(
        self, request: runs_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.StartRunResponse:
        run = draft(request.run_id, runs_pb2.RUN_STATUS_RUNNING)
        await self.put(run)
        return runs_pb2.StartRunResponse(run=run)

    async def _watch_run(
        self, request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.WatchRunResponse]:
        sent: list[runs_pb2.Run | None] = [None]

        def changed() -> bool:
            return self.runs.get(request.run_id) != sent[-1]

        while True:
            async with self._changed:
                await self._changed.wait_for(changed)
                sent.append(self.runs[request.run_id])
            yield runs_pb2.WatchRunResponse(run=sent[-1])


def draft(
    run_id: str, status: runs_pb2.RunStatus.ValueType = runs_pb2.RUN_STATUS_DRAFT
) -> runs_pb2.Run:
    return runs_pb2.Run(id=run_id, name=run_id, status=status)


@contextlib.asynccontextmanager
async def gateway_api(
    scheduler_addr: str, *, staleness: timedelta = STALENESS, capacity: int = 2048
) -> AsyncIterator[fleet_service_pb2_grpc.FleetServiceStub]:
    """The Fleet API of a gateway in front of `scheduler_addr`."""
    gateway = GatewayService(
        GatewaySettings(
            gateway_listen="127.0.0.1:0",
            scheduler_addr=scheduler_addr,
            gateway_tokens=TOKEN,
            gateway_run_staleness=staleness,
            gateway_run_cache_size=capacity,
        )
    )
    address = await gateway.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield fleet_service_pb2_grpc.FleetServiceStub(channel)
    finally:
        await gateway.stop(0.5)


@pytest.fixture
async def stand_in() -> AsyncIterator[SchedulerStandIn]:
    scheduler = SchedulerStandIn()
    await scheduler.start()
    try:
        yield scheduler
    finally:
        await scheduler.stop()


@pytest.fixture
async def fleet(
    stand_in: SchedulerStandIn,
) -> AsyncIterator[fleet_service_pb2_grpc.FleetServiceStub]:
    async with gateway_api(stand_in.address) as api:
        yield api


async def get(
    fleet: fleet_service_pb2_grpc.FleetServiceStub,
    run_id: str,
    metadata: tuple[tuple[str, str], ...] = AUTH,
) -> runs_pb2.Run:
    return (
        await fleet.GetRun(runs_pb2.GetRunRequest(run_id=run_id), metadata=metadata, timeout=5)
    ).run


async def test_concurrent_reads_of_a_run_share_one_upstream_call(
    stand_in: SchedulerStandIn, fleet: fleet_service_pb2_grpc.FleetServiceStub
) -> None:
    """Fifty GetRun calls in flight together for one run cost the scheduler a single GetRun."""
    await stand_in.put(draft("r1"))
    stand_in.delay = 0.3  # every call arrives while the first read is still out
    answers = await asyncio.gather(*(get(fleet, "r1") for _ in range(50)))
    assert {answer.id for answer in answers} == {"r1"}
    assert stand_in.reads == 1


async def test_unknown_run_is_not_found_every_time(
    stand_in: SchedulerStandIn, fleet: fleet_service_pb2_grpc.FleetServiceStub
) -> None:
    """NOT_FOUND is never kept: each call asks again, and a run that appears is found at once."""
    for attempt in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await get(fleet, "later")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert stand_in.reads == attempt + 1
    await stand_in.put(draft("later"))
    assert (await get(fleet, "later")).id == "later"


async def test_bad_token_is_refused_even_when_the_run_is_cached(
    stand_in: SchedulerStandIn, fleet: fleet_service_pb2_grpc.FleetServiceStub
) -> None:
    """A cached run is still only served to a valid bearer token; refused calls read nothing."""
    await stand_in.put(draft("r1"))
    await get(fleet, "r1")
    reads = stand_in.reads
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await get(fleet, "r1", metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stand_in.reads == reads
    assert (await get(fleet, "r1")).id == "r1"


async def test_snapshot_is_reread_once_the_staleness_bound_passes(
    stand_in: SchedulerStandIn, fleet: fleet_service_pb2_grpc.FleetServiceStub
) -> None:
    """A change at the scheduler shows in GetRun no later than the bound; final runs stay put."""
    await stand_in.put(draft("r1"))
    await get(fleet, "r1")
    await stand_in.put(draft("r1", runs_pb2.RUN_STATUS_COMPLETED))
    await asyncio.sleep(STALENESS.total_seconds())
    assert (await get(fleet, "r1")).status == runs_pb2.RUN_STATUS_COMPLETED
    reads = stand_in.reads
    await asyncio.sleep(2 * STALENESS.total_seconds())
    assert (await get(fleet, "r1")).status == runs_pb2.RUN_STATUS_COMPLETED
    assert stand_in.reads == reads  # final: kept, not re-read


async def test_least_recently_read_run_is_evicted(stand_in: SchedulerStandIn) -> None:
    """With room for two runs, reading a third evicts the least recently read one."""
    for run_id in ("a", "b", "c"):
        await stand_in.put(draft(run_id, runs_pb2.RUN_STATUS_COMPLETED))
    async with gateway_api(stand_in.address, capacity=2) as fleet:
        await get(fleet, "a")
        await get(fleet, "b")
        await get(fleet, "a")  # b is now the least recently read
        await get(fleet, "c")
        reads = stand_in.reads
        await get(fleet, "a")
        await get(fleet, "c")
        assert stand_in.reads == reads
        await get(fleet, "b")
        assert stand_in.reads == reads + 1


async def test_watched_run_is_answered_from_its_progress_stream(
    stand_in: SchedulerStandIn,
) -> None:
    """An update a WatchRun stream brought answers GetRun without another scheduler read."""
    await stand_in.put(draft("r1"))
    # A wide bound, so that a slow machine cannot age the streamed snapshot into a re-read.
    async with gateway_api(stand_in.address, staleness=timedelta(seconds=5)) as fleet:
        watch = fleet.WatchRun(runs_pb2.WatchRunRequest(run_id="r1"), metadata=AUTH, timeout=10)
        assert (await watch.read()).run.status == runs_pb2.RUN_STATUS_DRAFT
        await stand_in.put(draft("r1", runs_pb2.RUN_STATUS_RUNNING))
        assert (await watch.read()).run.status == runs_pb2.RUN_STATUS_RUNNING
        assert (await get(fleet, "r1")).status == runs_pb2.RUN_STATUS_RUNNING
        assert stand_in.reads == 0
        watch.cancel()


async def test_a_read_begun_before_a_write_does_not_answer_reads_after_it(
    stand_in: SchedulerStandIn,
) -> None:
    """A GetRun still on its way when StartRun returns neither answers later reads nor lands."""
    await stand_in.put(draft("r1"))
    stand_in.delay = 0.5
    # A wide bound: only the write, not age, may make the gateway read the run again.
    async with gateway_api(stand_in.address, staleness=timedelta(seconds=5)) as fleet:
        before = asyncio.ensure_future(get(fleet, "r1"))
        await asyncio.wait_for(stand_in.read_arrived.wait(), 5)
        await fleet.StartRun(runs_pb2.StartRunRequest(run_id="r1"), metadata=AUTH, timeout=5)
        stand_in.delay = 0.0
        assert (await get(fleet, "r1")).status == runs_pb2.RUN_STATUS_RUNNING
        assert (await before).status == runs_pb2.RUN_STATUS_DRAFT
        assert (await get(fleet, "r1")).status == runs_pb2.RUN_STATUS_RUNNING
        assert stand_in.reads == 2


async def test_a_read_cut_short_by_its_deadline_still_answers_the_others(
    stand_in: SchedulerStandIn, fleet: fleet_service_pb2_grpc.FleetServiceStub
) -> None:
    """A caller whose deadline passes gets DEADLINE_EXCEEDED; the shared read goes on for others."""
    await stand_in.put(draft("r1"))
    stand_in.delay = 0.5
    patient = asyncio.ensure_future(get(fleet, "r1"))
    with pytest.raises(grpc.aio.AioRpcError) as hurried:
        await fleet.GetRun(runs_pb2.GetRunRequest(run_id="r1"), metadata=AUTH, timeout=0.1)
    assert hurried.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await patient).id == "r1"
    assert stand_in.reads == 1


@pytest.fixture
async def real(
    nats_server: EmbeddedNatsServer, sqlite_url: str
) -> AsyncIterator[
    tuple[fleet_service_pb2_grpc.FleetServiceStub, fleet_service_pb2_grpc.FleetServiceStub]
]:
    """(the Fleet API through a gateway, the real scheduler's own API behind it)."""
    scheduler = SchedulerService(
        SchedulerSettings(
            scheduler_listen="127.0.0.1:0",
            database_url=sqlite_url,
            database_upgrade=True,
            nats_url=nats_server.url,
        )
    )
    await scheduler.start()
    try:
        async with (
            gateway_api(scheduler.address) as fleet,
            grpc.aio.insecure_channel(scheduler.address) as inside,
        ):
            yield fleet, fleet_service_pb2_grpc.FleetServiceStub(inside)
    finally:
        await scheduler.stop(timedelta(seconds=0.5))


async def test_change_made_elsewhere_shows_within_the_staleness_bound(
    real: tuple[fleet_service_pb2_grpc.FleetServiceStub, fleet_service_pb2_grpc.FleetServiceStub],
) -> None:
    """A run started behind this gateway's back reads as running once the bound has passed."""
    fleet, scheduler = real
    spec = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=1)
    run = (await scheduler.CreateRun(runs_pb2.CreateRunRequest(spec=spec), timeout=5)).run
    assert (await get(fleet, run.id)).status == runs_pb2.RUN_STATUS_DRAFT
    await scheduler.StartRun(runs_pb2.StartRunRequest(run_id=run.id), timeout=5)
    await asyncio.sleep(STALENESS.total_seconds())
    assert (await get(fleet, run.id)).status == runs_pb2.RUN_STATUS_RUNNING


async def test_writes_through_the_gateway_are_read_back_at_once(
    real: tuple[fleet_service_pb2_grpc.FleetServiceStub, fleet_service_pb2_grpc.FleetServiceStub],
) -> None:
    """StartRun, then PauseRun through the gateway: the next GetRun shows each, without waiting."""
    fleet, _ = real
    spec = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=1)
    run = (
        await fleet.CreateRun(runs_pb2.CreateRunRequest(spec=spec), metadata=AUTH, timeout=5)
    ).run
    assert (await get(fleet, run.id)).status == runs_pb2.RUN_STATUS_DRAFT
    await fleet.StartRun(runs_pb2.StartRunRequest(run_id=run.id), metadata=AUTH, timeout=5)
    assert (await get(fleet, run.id)).status == runs_pb2.RUN_STATUS_RUNNING
    await fleet.PauseRun(runs_pb2.PauseRunRequest(run_id=run.id), metadata=AUTH, timeout=5)
    assert (await get(fleet, run.id)).status == runs_pb2.RUN_STATUS_PAUSED

"""The gateway: the public Fleet API, authenticated, forwarded to the scheduler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.common.config import GatewaySettings
from services.common.grpc_server import ServiceServer, write_ready_file
from services.common.lifecycle import shutdown_event
from services.gateway._auth import TokenAuthInterceptor
from services.gateway._fanout import UpstreamError, WatchFanout
from smartfleet.v1 import fleet_pb2_grpc, node_pb2, results_pb2, runs_pb2, scheduler_pb2_grpc

logger = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = 30.0


def _timeout(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    return UPSTREAM_TIMEOUT if remaining is None else max(0.1, min(remaining, UPSTREAM_TIMEOUT))


class FleetServicer(fleet_pb2_grpc.FleetServicer):
    def __init__(self, stub: scheduler_pb2_grpc.SchedulerStub, fanout: WatchFanout) -> None:
        self._stub = stub
        self._fanout = fanout

    async def _forward(self, method: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(request, timeout=_timeout(context))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                raise UpstreamError(
                    grpc.StatusCode.UNAVAILABLE, "the scheduler is unavailable"
                ) from None
            raise UpstreamError(error.code(), error.details() or "scheduler error") from None

    async def CreateRun(
        self, request: runs_pb2.CreateRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return await self._forward(self._stub.CreateRun, request, context)

    async def StartRun(
        self, request: runs_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return await self._forward(self._stub.StartRun, request, context)

    async def GetRun(
        self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return await self._forward(self._stub.GetRun, request, context)

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        return await self._forward(self._stub.ListRuns, request, context)

    async def GetRunStats(
        self, request: runs_pb2.GetRunStatsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.RunStats:
        return await self._forward(self._stub.GetRunStats, request, context)

    async def ListResults(
        self, request: results_pb2.ListResultsRequest, context: grpc.aio.ServicerContext
    ) -> results_pb2.ListResultsResponse:
        return await self._forward(self._stub.ListResults, request, context)

    async def ListNodes(
        self, request: node_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.ListNodesResponse:
        return await self._forward(self._stub.ListNodes, request, context)

    async def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.Run]:
        async for run in self._fanout.watch(request.run_id):
            yield run


class GatewayService:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._server: ServiceServer | None = None
        self._fanout: WatchFanout | None = None

    async def start(self) -> str:
        auth = TokenAuthInterceptor(self.settings.token_list)
        self._channel = grpc.aio.insecure_channel(
            self.settings.scheduler_addr,
            options=[
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.max_receive_message_length", 16 << 20),
            ],
        )
        stub = scheduler_pb2_grpc.SchedulerStub(self._channel)
        self._fanout = WatchFanout(stub)
        self._server = ServiceServer(
            listen=self.settings.gateway_listen,
            service_names=["smartfleet.v1.Fleet"],
            interceptors=[auth],
        )
        fleet_pb2_grpc.add_FleetServicer_to_server(
            FleetServicer(stub, self._fanout), self._server.server
        )
        return await self._server.start()

    async def stop(self, grace: float = 5.0) -> None:
        if self._server:
            await self._server.stop(grace)
            self._server = None
        if self._fanout:
            await self._fanout.close()
        if self._channel:
            await self._channel.close()
            self._channel = None


async def serve(settings: GatewaySettings) -> None:
    stop = shutdown_event()
    service = GatewayService(settings)
    address = await service.start()
    write_ready_file(settings.ready_file, gateway=address)
    await stop.wait()
    logger.info("gateway shutting down")
    await service.stop()

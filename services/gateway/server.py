"""The gateway: the public Fleet API, authenticated, forwarded to the scheduler.

The scheduler serves the same FleetService on its internal listener, so every method is
forwarded generically, by name, and a new RPC needs no gateway code. The exceptions: WatchRun
(one upstream stream per run, fanned out), GetRun (answered from run snapshots at most
`gateway_run_staleness` old, see _runcache.py) and GetServerInfo (the gateway adds itself);
methods whose response carries a `run` are writes to it, and drop the gateway's snapshot of it.

With several schedulers (`--scheduler-addr a,b`) every call goes to the leader; a standby's
refusal names it and the call follows (services/common/leader.py). Reads (`Get*`, `List*`) are
also sent again when a scheduler drops the call; a write only when it surely was not executed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from services.common.config import GatewaySettings
from services.common.grpc_server import ServiceServer, rewrap, write_ready_file
from services.common.leader import LeaderChannels
from services.common.lifecycle import shutdown_event
from services.common.server_info import ServerInfoApi
from services.gateway._auth import TokenAuthInterceptor
from services.gateway._fanout import UpstreamError, WatchFanout, WatchUpstream
from services.gateway._runcache import Fetch, RunSnapshotCache
from smartfleet.v1 import fleet_service_pb2, runs_pb2

logger = logging.getLogger(__name__)

FLEET = fleet_service_pb2.DESCRIPTOR.services_by_name["FleetService"]
RUN_MESSAGE = runs_pb2.Run.DESCRIPTOR.full_name
UPSTREAM_TIMEOUT = 30.0
# A GetRun read shared by many callers (and background refreshes) gives up after this.
READ_TIMEOUT = 10.0


def _timeout(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    return UPSTREAM_TIMEOUT if remaining is None else max(0.1, min(remaining, UPSTREAM_TIMEOUT))


def _message_class(descriptor: Any) -> Any:
    return message_factory.GetMessageClass(descriptor)


def _upstream_error(error: grpc.aio.AioRpcError) -> UpstreamError:
    """The scheduler's error, passed on with its status (its absence said plainly)."""
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        return UpstreamError(grpc.StatusCode.UNAVAILABLE, "the scheduler is unavailable")
    return UpstreamError(error.code(), error.details() or "scheduler error")


class _Method:
    """A Scheduler method's multi-callable on a channel (LeaderChannels keeps one per channel)."""

    def __init__(self, method: str, request_class: Any, response_class: Any, *, stream: bool):
        self.path = f"/{FLEET.full_name}/{method}"
        self._serialize = request_class.SerializeToString
        self._deserialize = response_class.FromString
        self._stream = stream

    def __call__(self, channel: grpc.aio.Channel) -> Any:
        make = channel.unary_stream if self._stream else channel.unary_unary
        return make(
            self.path,
            request_serializer=self._serialize,
            response_deserializer=self._deserialize,
        )


def _is_read(name: str) -> bool:
    return name.startswith(("Get", "List"))


def _forwarder(channels: LeaderChannels, method: MethodDescriptor) -> grpc.RpcMethodHandler:
    request_class = _message_class(method.input_type)
    response_class = _message_class(method.output_type)
    upstream = _Method(method.name, request_class, response_class, stream=False)
    idempotent = _is_read(method.name)

    async def forward(request: Any, context: grpc.aio.ServicerContext) -> Any:
        timeout = _timeout(context)
        try:
            return await channels.call(
                lambda call: call(request, timeout=timeout),
                stub=upstream,
                timeout=timedelta(seconds=timeout),
                idempotent=idempotent,
            )
        except grpc.aio.AioRpcError as error:
            raise _upstream_error(error) from None

    return grpc.unary_unary_rpc_method_handler(
        forward,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )


def _stream_forwarder(channels: LeaderChannels, method: MethodDescriptor) -> grpc.RpcMethodHandler:
    """A server-streaming method passed through message by message (GetArtifact)."""
    request_class = _message_class(method.input_type)
    response_class = _message_class(method.output_type)
    upstream = _Method(method.name, request_class, response_class, stream=True)

    async def forward(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        timeout = _timeout(context)
        try:
            async for message in channels.stream(
                lambda call: call(request, timeout=timeout),
                stub=upstream,
                timeout=timedelta(seconds=timeout),
            ):
                yield message
        except grpc.aio.AioRpcError as error:
            raise _upstream_error(error) from None

    return grpc.unary_stream_rpc_method_handler(
        forward,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )


def _scheduler_get_run(channels: LeaderChannels) -> Fetch:
    """The scheduler's GetRun, with its errors passed on under their own status codes."""
    upstream = _Method("GetRun", runs_pb2.GetRunRequest, runs_pb2.GetRunResponse, stream=False)

    async def get_run(run_id: str, timeout: float) -> runs_pb2.Run:
        request = runs_pb2.GetRunRequest(run_id=run_id)
        try:
            reply: runs_pb2.GetRunResponse = await channels.call(
                lambda call: call(request, timeout=timeout),
                stub=upstream,
                timeout=timedelta(seconds=timeout),
                idempotent=True,
            )
        except grpc.aio.AioRpcError as error:
            raise _upstream_error(error) from None
        return reply.run

    return get_run


def _scheduler_watch(channels: LeaderChannels) -> WatchUpstream:
    """The leader's WatchRun stream of a run (opened again elsewhere if a standby refuses)."""
    upstream = _Method("WatchRun", runs_pb2.WatchRunRequest, runs_pb2.WatchRunResponse, stream=True)

    async def watch(run_id: str) -> AsyncIterator[runs_pb2.Run]:
        request = runs_pb2.WatchRunRequest(run_id=run_id)
        async for reply in channels.stream(
            lambda call: call(request), stub=upstream, timeout=timedelta(seconds=READ_TIMEOUT)
        ):
            yield reply.run

    return watch


def _get_run_handler(cache: RunSnapshotCache) -> grpc.RpcMethodHandler:
    async def get_run(
        request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.GetRunResponse:
        run = await cache.get(request.run_id, timeout=_timeout(context))
        return runs_pb2.GetRunResponse(run=run)

    return grpc.unary_unary_rpc_method_handler(
        get_run,
        request_deserializer=runs_pb2.GetRunRequest.FromString,
        response_serializer=runs_pb2.GetRunResponse.SerializeToString,
    )


def _dropping_snapshot(
    handler: grpc.RpcMethodHandler, cache: RunSnapshotCache
) -> grpc.RpcMethodHandler:
    """`handler` as it is, then the cached snapshot of the run it wrote (even if it failed)."""
    forward = handler.unary_unary

    async def write(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            reply = await forward(request, context)
        finally:
            cache.invalidate(getattr(request, "run_id", ""))
        cache.invalidate(reply.run.id)
        return reply

    return rewrap(handler, write)


def _watch_handler(fanout: WatchFanout) -> grpc.RpcMethodHandler:
    async def watch(
        request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.WatchRunResponse]:
        async for run in fanout.watch(request.run_id):
            yield runs_pb2.WatchRunResponse(run=run)

    return grpc.unary_stream_rpc_method_handler(
        watch,
        request_deserializer=runs_pb2.WatchRunRequest.FromString,
        response_serializer=runs_pb2.WatchRunResponse.SerializeToString,
    )


def _server_info_handler(
    channels: LeaderChannels, address: Callable[[], str]
) -> grpc.RpcMethodHandler:
    upstream = _Method(
        "GetServerInfo",
        fleet_service_pb2.GetServerInfoRequest,
        fleet_service_pb2.GetServerInfoResponse,
        stream=False,
    )

    async def scheduler_components(timeout: float) -> list[fleet_service_pb2.ServerComponent]:
        request = fleet_service_pb2.GetServerInfoRequest()
        try:
            reply: fleet_service_pb2.GetServerInfoResponse = await channels.call(
                lambda call: call(request, timeout=timeout),
                stub=upstream,
                timeout=timedelta(seconds=timeout),
                idempotent=True,
            )
        except grpc.aio.AioRpcError as error:
            raise _upstream_error(error) from None
        return list(reply.components)

    api = ServerInfoApi(name="gateway", address=address, upstream=scheduler_components)
    return grpc.unary_unary_rpc_method_handler(
        api.GetServerInfo,
        request_deserializer=fleet_service_pb2.GetServerInfoRequest.FromString,
        response_serializer=fleet_service_pb2.GetServerInfoResponse.SerializeToString,
    )


def _writes_a_run(method: MethodDescriptor) -> bool:
    run = method.output_type.fields_by_name.get("run")
    return (
        run is not None
        and run.message_type is not None
        and (run.message_type.full_name == RUN_MESSAGE)
    )


def fleet_handlers(
    channels: LeaderChannels,
    fanout: WatchFanout,
    cache: RunSnapshotCache,
    address: Callable[[], str] = lambda: "",
) -> dict[str, grpc.RpcMethodHandler]:
    # Methods with a handler of their own; every other one is forwarded by name.
    special: dict[str, Callable[[], grpc.RpcMethodHandler]] = {
        "WatchRun": lambda: _watch_handler(fanout),
        "GetRun": lambda: _get_run_handler(cache),
        "GetServerInfo": lambda: _server_info_handler(channels, address),
    }
    handlers = {}
    for method in FLEET.methods:
        if method.name in special:
            handlers[method.name] = special[method.name]()
        elif method.server_streaming and not method.client_streaming:
            handlers[method.name] = _stream_forwarder(channels, method)
        elif method.client_streaming:
            raise RuntimeError(f"Fleet.{method.name} streams; give it a handler in the gateway")
        elif _writes_a_run(method):
            handlers[method.name] = _dropping_snapshot(_forwarder(channels, method), cache)
        else:
            handlers[method.name] = _forwarder(channels, method)
    return handlers


class GatewayService:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._channels: LeaderChannels | None = None
        self._server: ServiceServer | None = None
        self._fanout: WatchFanout | None = None
        self._cache: RunSnapshotCache | None = None
        self.address = ""

    async def start(self) -> str:
        auth = TokenAuthInterceptor(self.settings.token_list)
        self._channels = LeaderChannels(
            self.settings.scheduler_addrs, options=[("grpc.keepalive_time_ms", 30_000)]
        )
        self._cache = RunSnapshotCache(
            _scheduler_get_run(self._channels),
            staleness=self.settings.gateway_run_staleness,
            capacity=self.settings.gateway_run_cache_size,
            upstream_timeout=READ_TIMEOUT,
        )
        self._fanout = WatchFanout(_scheduler_watch(self._channels), on_snapshot=self._cache.offer)
        self._server = ServiceServer(
            listen=self.settings.gateway_listen,
            service_names=[FLEET.full_name],
            interceptors=[auth],
        )
        self._server.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    FLEET.full_name,
                    fleet_handlers(
                        self._channels, self._fanout, self._cache, address=lambda: self.address
                    ),
                ),
            )
        )
        self.address = await self._server.start()
        return self.address

    async def stop(self, grace: float = 5.0) -> None:
        if self._server:
            await self._server.stop(grace)
            self._server = None
        if self._fanout:
            await self._fanout.close()
        if self._cache:
            await self._cache.close()
        if self._channels:
            await self._channels.close()
            self._channels = None


async def serve(settings: GatewaySettings) -> None:
    stop = shutdown_event()
    service = GatewayService(settings)
    address = await service.start()
    write_ready_file(settings.ready_file, gateway=address)
    await stop.wait()
    logger.info("gateway shutting down")
    await service.stop()

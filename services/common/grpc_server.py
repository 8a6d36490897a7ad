"""gRPC server bootstrap shared by every service: health, reflection, error mapping, ready file."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.errors import SmartfleetError

logger = logging.getLogger(__name__)

_METHOD_WRAPPERS = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def handler_kind(handler: grpc.RpcMethodHandler) -> str:
    streaming_in = "stream" if handler.request_streaming else "unary"
    streaming_out = "stream" if handler.response_streaming else "unary"
    return f"{streaming_in}_{streaming_out}"


def rewrap(handler: grpc.RpcMethodHandler, behaviour: Any) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that runs `behaviour` instead."""
    kind = handler_kind(handler)
    return _METHOD_WRAPPERS[kind](
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def compose_service(service: ServiceDescriptor, *implementations: object) -> grpc.GenericRpcHandler:
    """One gRPC service served by several servicer classes, each implementing some of its
    methods (by name, as generated servicers do); every method must have exactly one."""
    handlers = {}
    for method in service.methods:
        owners = [impl for impl in implementations if callable(getattr(impl, method.name, None))]
        if len(owners) != 1:
            names = ", ".join(type(owner).__name__ for owner in owners) or "none"
            raise TypeError(f"{service.full_name}.{method.name} implemented by {names}")
        behaviour = getattr(owners[0], method.name)
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        kind = (
            f"{'stream' if method.client_streaming else 'unary'}_"
            f"{'stream' if method.server_streaming else 'unary'}"
        )
        handlers[method.name] = _METHOD_WRAPPERS[kind](
            behaviour,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


async def _abort_for(error: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    if isinstance(error, SmartfleetError):
        await context.abort(error.code, error.message)
    logger.exception("unexpected error in %s", method)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error in {method}; see the service log"
    )


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns SmartfleetError into its status code and any other exception into INTERNAL, logged."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        kind = handler_kind(handler)
        inner = getattr(handler, kind)

        if handler.response_streaming:

            async def stream_behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    async for item in inner(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as error:
                    await _abort_for(error, context, method)

            return rewrap(handler, stream_behaviour)

        async def unary_behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort_for(error, context, method)

        return rewrap(handler, unary_behaviour)


class ServiceServer:
    """A grpc.aio server with health checking and reflection, bound to one address."""

    def __init__(
        self,
        *,
        listen: str,
        service_names: Sequence[str],
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._listen = listen
        self._service_names = list(service_names)
        self.server = grpc.aio.server(
            interceptors=[*interceptors, ErrorMappingInterceptor()],
            options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                *options,
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0

    async def start(self) -> str:
        """Bind and serve; returns the bound `host:port` (the port is real even when asked for 0)."""
        host = self._listen.rsplit(":", 1)[0]
        try:
            self.port = self.server.add_insecure_port(self._listen)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {self._listen}: the address is taken or not local")
        await self.server.start()
        await self.set_serving(True)
        address = f"{host}:{self.port}"
        logger.info("serving %s on %s", ", ".join(self._service_names), address)
        return address

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self._service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def write_ready_file(path: str | None, **addresses: str) -> None:
    """Atomically write the service's bound addresses for a supervisor waiting on them."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **addresses}))
    tmp.replace(target)

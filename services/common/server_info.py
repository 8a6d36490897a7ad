"""GetServerInfo: which Smartfleet service answers, its version and address."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from services import __version__
from smartfleet.v1 import fleet_service_pb2


class ServerInfoApi:
    """Answers GetServerInfo with this service's component, then those of what it fronts."""

    def __init__(
        self,
        *,
        name: str,
        address: Callable[[], str],
        upstream: Callable[[float], Awaitable[list[fleet_service_pb2.ServerComponent]]]
        | None = None,
    ) -> None:
        self._name = name
        self._address = address
        self._upstream = upstream

    async def GetServerInfo(
        self, request: fleet_service_pb2.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> fleet_service_pb2.GetServerInfoResponse:
        components = [
            fleet_service_pb2.ServerComponent(
                name=self._name, version=__version__, address=self._address()
            )
        ]
        if self._upstream is not None:
            remaining = context.time_remaining()
            components += await self._upstream(5.0 if remaining is None else min(5.0, remaining))
        return fleet_service_pb2.GetServerInfoResponse(components=components)

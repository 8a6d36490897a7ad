"""Fleet RPCs of FleetService as the scheduler serves them: nodes (list, cordon, drain) and
target origins in backoff."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from services.common.errors import InvalidArgument
from services.common.types import NodeState
from services.scheduler import _convert as convert
from services.scheduler._hosts import HostLimiter
from services.scheduler._paging import page_by_name
from services.scheduler._registry import NodeRegistry
from services.scheduler._runs_api import require_id
from smartfleet.v1 import nodes_pb2


class NodesApi:
    def __init__(self, *, registry: NodeRegistry) -> None:
        self._registry = registry

    async def ListNodes(
        self, request: nodes_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> nodes_pb2.ListNodesResponse:
        page, token = page_by_name(
            self._registry.nodes(),
            lambda node: node.info.node_id,
            listing="nodes",
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return nodes_pb2.ListNodesResponse(
            nodes=[convert.node_to_pb(node) for node in page], next_page_token=token
        )

    async def CordonNode(
        self, request: nodes_pb2.CordonNodeRequest, context: grpc.aio.ServicerContext
    ) -> nodes_pb2.CordonNodeResponse:
        node_id = require_id(request.node_id, "node_id")
        node = await self._registry.hold(node_id, NodeState.CORDONED)
        return nodes_pb2.CordonNodeResponse(node=convert.node_to_pb(node))

    async def DrainNode(
        self, request: nodes_pb2.DrainNodeRequest, context: grpc.aio.ServicerContext
    ) -> nodes_pb2.DrainNodeResponse:
        node_id = require_id(request.node_id, "node_id")
        node = await self._registry.hold(node_id, NodeState.DRAINING)
        return nodes_pb2.DrainNodeResponse(node=convert.node_to_pb(node))

    async def UncordonNode(
        self, request: nodes_pb2.UncordonNodeRequest, context: grpc.aio.ServicerContext
    ) -> nodes_pb2.UncordonNodeResponse:
        node_id = require_id(request.node_id, "node_id")
        node = await self._registry.hold(node_id, None)
        return nodes_pb2.UncordonNodeResponse(node=convert.node_to_pb(node))


class HostsApi:
    def __init__(self, *, hosts: HostLimiter, wake: Callable[[], None]) -> None:
        self._hosts = hosts
        # An origin out of backoff may have sessions waiting for it: the dispatcher looks again.
        self._wake = wake

    async def ListHosts(
        self, request: nodes_pb2.ListHostsRequest, context: grpc.aio.ServicerContext
    ) -> nodes_pb2.ListHostsResponse:
        page, token = page_by_name(
            self._hosts.states(datetime.now(UTC)),
            lambda state: state.host,
            listing="hosts",
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return nodes_pb2.ListHostsResponse(
            hosts=[convert.host_to_pb(state) for state in page], next_page_token=token
        )

    async def ResetHostBackoff(
        self, request: nodes_pb2.ResetHostBackoffRequest, context: grpc.aio.ServicerContext
    ) -> nodes_pb2.ResetHostBackoffResponse:
        host = request.host.strip().lower()
        if not host or len(host) > 300:
            raise InvalidArgument("host", "is required (an origin or a host name)")
        states = self._hosts.reset(host)
        self._wake()
        return nodes_pb2.ResetHostBackoffResponse(reset=[convert.host_to_pb(s) for s in states])

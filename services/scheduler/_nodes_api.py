"""Fleet RPCs of the scheduler's internal API: nodes (list, cordon, drain) and target hosts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from services.common.errors import InvalidArgument
from services.common.types import NodeState
from services.scheduler import _convert as convert
from services.scheduler._hosts import HostLimiter
from services.scheduler._registry import NodeRegistry
from services.scheduler._runs_api import require_id
from smartfleet.v1 import node_pb2, runs_pb2


class NodesApi:
    def __init__(self, *, registry: NodeRegistry) -> None:
        self._registry = registry

    async def ListNodes(
        self, request: node_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.ListNodesResponse:
        return node_pb2.ListNodesResponse(
            nodes=[convert.node_to_pb(node) for node in self._registry.nodes()]
        )

    async def CordonNode(
        self, request: node_pb2.NodeRef, context: grpc.aio.ServicerContext
    ) -> node_pb2.Node:
        node_id = require_id(request.node_id, "node_id")
        return convert.node_to_pb(await self._registry.hold(node_id, NodeState.CORDONED))

    async def DrainNode(
        self, request: node_pb2.NodeRef, context: grpc.aio.ServicerContext
    ) -> node_pb2.Node:
        node_id = require_id(request.node_id, "node_id")
        return convert.node_to_pb(await self._registry.hold(node_id, NodeState.DRAINING))

    async def UncordonNode(
        self, request: node_pb2.NodeRef, context: grpc.aio.ServicerContext
    ) -> node_pb2.Node:
        node_id = require_id(request.node_id, "node_id")
        return convert.node_to_pb(await self._registry.hold(node_id, None))


class HostsApi:
    def __init__(self, *, hosts: HostLimiter, wake: Callable[[], None]) -> None:
        self._hosts = hosts
        # A host out of backoff may have sessions waiting for it: the dispatcher looks again.
        self._wake = wake

    async def ListHosts(
        self, request: runs_pb2.ListHostsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListHostsResponse:
        states = self._hosts.states(datetime.now(UTC))
        return runs_pb2.ListHostsResponse(hosts=[convert.host_to_pb(state) for state in states])

    async def ResetHostBackoff(
        self, request: runs_pb2.ResetHostBackoffRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.HostBackoff:
        host = request.host.strip().lower()
        if not host or len(host) > 253:
            raise InvalidArgument("host", "is required (a host name or address)")
        state = self._hosts.reset(host)
        self._wake()
        return convert.host_to_pb(state)

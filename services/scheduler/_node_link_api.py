"""The node link's core RPCs: nodes register, heartbeat and report results and progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import grpc

from services.common import bus
from services.common.config import MAX_NODE_LABELS
from services.common.contracts import duration, node_info_from_pb, node_load_from_pb, result_from_pb
from services.common.errors import InvalidArgument
from services.common.types import Outcome
from services.scheduler import _convert as convert
from services.scheduler._registry import NodeRegistry
from services.scheduler._runs_api import require_id
from services.scheduler.jobs import JobStore
from smartfleet.v1 import node_link_pb2

MAX_RESULTS_PER_REPORT = 1000
ENGINES = ("chromium", "firefox", "webkit", "noop")


class NodeLinkApi:
    def __init__(
        self,
        *,
        registry: NodeRegistry,
        jobs: JobStore,
        ensure_pool: Callable[[str], Awaitable[None]],
        extend_deadlines: Callable[[Sequence[str]], Awaitable[int]],
        heartbeat_interval: timedelta,
    ) -> None:
        self._registry = registry
        self._jobs = jobs
        self._ensure_pool = ensure_pool
        self._extend_deadlines = extend_deadlines
        self._heartbeat_interval = heartbeat_interval

    async def RegisterNode(
        self, request: node_link_pb2.RegisterNodeRequest, context: grpc.aio.ServicerContext
    ) -> node_link_pb2.RegisterNodeResponse:
        info = node_info_from_pb(request.info)
        require_id(info.node_id, "info.node_id")
        if info.slots < 0 or info.slots > 10_000:
            raise InvalidArgument("info.slots", "must be between 0 and 10000")
        if not info.engines:
            raise InvalidArgument("info.engines", "a node must serve at least one engine")
        if any(engine not in ENGINES for engine in info.engines):
            raise InvalidArgument("info.engines", f"each one of {', '.join(ENGINES)}")
        if len(info.labels) > MAX_NODE_LABELS:
            raise InvalidArgument("info.labels", f"at most {MAX_NODE_LABELS} placement labels")
        # Every pool the node may bind must have its consumer before the node binds.
        for pool in bus.node_pools(info.engines, info.labels):
            await self._ensure_pool(pool)
        await self._registry.register(info)
        return node_link_pb2.RegisterNodeResponse(
            heartbeat_interval=duration(self._heartbeat_interval)
        )

    async def Heartbeat(
        self, request: node_link_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> node_link_pb2.HeartbeatResponse:
        state = convert.NODE_STATE_FROM_PB.get(request.state)
        if state is None:
            raise InvalidArgument("state", "is required")
        node_id = require_id(request.node_id, "node_id")
        known = await self._registry.heartbeat(
            node_id,
            load=node_load_from_pb(request.load),
            state=state,
            slots=max(0, request.slots),
        )
        commands = [
            node_link_pb2.NodeCommand(cancel_run=run_id)
            for run_id in self._registry.cancelled_runs()
        ]
        order = self._registry.order(node_id, state) if known else None
        if order == "drain":
            commands.append(node_link_pb2.NodeCommand(drain=True))
        elif order is not None:
            commands.append(node_link_pb2.NodeCommand(cordon=order == "cordon"))
        return node_link_pb2.HeartbeatResponse(known=known, commands=commands)

    async def ReportResults(
        self, request: node_link_pb2.ReportResultsRequest, context: grpc.aio.ServicerContext
    ) -> node_link_pb2.ReportResultsResponse:
        if len(request.results) > MAX_RESULTS_PER_REPORT:
            raise InvalidArgument("results", f"at most {MAX_RESULTS_PER_REPORT} results per report")
        results = []
        for position, message in enumerate(request.results):
            require_id(message.job_id, f"results[{position}].job_id")
            if message.attempt < 1:
                raise InvalidArgument(f"results[{position}].attempt", "must be >= 1")
            try:
                result = result_from_pb(message)
            except ValueError as error:
                raise InvalidArgument(f"results[{position}].outcome", str(error)) from None
            if result.outcome is Outcome.LOST:
                raise InvalidArgument(f"results[{position}].outcome", "a session does not end lost")
            results.append(result)
        stored = await self._jobs.report(results)
        return node_link_pb2.ReportResultsResponse(
            stored=[
                node_link_pb2.StoredResult(job_id=s.job_id, attempt=s.attempt, new=s.new)
                for s in stored
            ]
        )

    async def ReportInProgress(
        self, request: node_link_pb2.ReportInProgressRequest, context: grpc.aio.ServicerContext
    ) -> node_link_pb2.ReportInProgressResponse:
        if len(request.job_ids) > MAX_RESULTS_PER_REPORT:
            raise InvalidArgument("job_ids", f"at most {MAX_RESULTS_PER_REPORT} per report")
        if request.job_ids:
            await self._extend_deadlines(list(request.job_ids))
        return node_link_pb2.ReportInProgressResponse()

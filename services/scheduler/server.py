"""The scheduler's gRPC server: the internal Scheduler API for gateways and the NodeLink for nodes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta

import grpc
from nats.aio.client import Client as NatsClient

from services.common import bus
from services.common.config import SchedulerSettings
from services.common.contracts import node_info_from_pb, node_load_from_pb, result_from_pb
from services.common.errors import InvalidArgument
from services.common.grpc_server import ServiceServer, write_ready_file
from services.common.lifecycle import shutdown_event
from services.common.spec import validate_spec
from services.common.types import NodeState
from services.scheduler import _convert as convert
from services.scheduler._accounts import AccountStore
from services.scheduler._accounts_api import AccountLinkApi, AccountsApi
from services.scheduler._artifacts import ArtifactStore
from services.scheduler._artifacts_api import ArtifactLinkApi, ArtifactsApi
from services.scheduler._credit import CreditLedger
from services.scheduler._db import Database
from services.scheduler._dispatcher import Dispatcher
from services.scheduler._hosts import HostLimiter
from services.scheduler._ingestor import ResultIngestor
from services.scheduler._progress import RunProgressHub
from services.scheduler._registry import NodeRegistry
from services.scheduler._runs import Run, RunStore
from services.scheduler._schedules import ScheduleRunner, ScheduleStore
from services.scheduler._schedules_api import SchedulesApi
from services.scheduler._secrets import SecretBox
from smartfleet.v1 import node_pb2, node_pb2_grpc, results_pb2, runs_pb2, scheduler_pb2_grpc

logger = logging.getLogger(__name__)

MAX_RESULTS_PER_REPORT = 1000
DEFAULT_PAGE = 500
MAX_PAGE = 5000


def _require_id(value: str, field: str) -> str:
    if not value or len(value) > 128:
        raise InvalidArgument(field, "is required (at most 128 characters)")
    return value


class SchedulerServicer(
    AccountsApi, ArtifactsApi, SchedulesApi, scheduler_pb2_grpc.SchedulerServicer
):
    def __init__(self, service: SchedulerService) -> None:
        self._s = service

    async def CreateRun(
        self, request: runs_pb2.CreateRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        spec = validate_spec(
            convert.spec_data_from_pb(request.spec),
            allowed_hosts=self._s.settings.allowed_host_list,
        )
        run = await self._s.runs.create(spec, start=request.start)
        logger.info(
            "run %s created (%d sessions, started=%s)", run.id, spec.sessions, request.start
        )
        self._s.dispatcher.wake()
        return convert.run_to_pb(run)

    async def StartRun(
        self, request: runs_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        run = await self._s.runs.start(_require_id(request.run_id, "run_id"))
        if request.now:
            run = await self._s.runs.expedite(run.id)
        return self._s.changed(run)

    async def PauseRun(
        self, request: runs_pb2.RunRef, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return self._s.changed(await self._s.runs.pause(_require_id(request.run_id, "run_id")))

    async def ResumeRun(
        self, request: runs_pb2.RunRef, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return self._s.changed(await self._s.runs.resume(_require_id(request.run_id, "run_id")))

    async def ExpediteRun(
        self, request: runs_pb2.RunRef, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return self._s.changed(await self._s.runs.expedite(_require_id(request.run_id, "run_id")))

    async def CancelRun(
        self, request: runs_pb2.RunRef, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        cancelled = await self._s.runs.cancel(_require_id(request.run_id, "run_id"))
        for pool, count in cancelled.withdrawn.items():
            self._s.ledger.returned(pool, count, run_id=cancelled.run.id)
        self._s.hosts.forget_run(cancelled.run.id)
        # Nodes abort its sessions and drop its envelopes when they next heartbeat.
        self._s.registry.cancel_run(cancelled.run.id)
        logger.info("run %s cancelled", cancelled.run.id)
        return self._s.changed(cancelled.run)

    async def ListJobs(
        self, request: runs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListJobsResponse:
        if request.limit < 0 or request.limit > MAX_PAGE:
            raise InvalidArgument("limit", f"must be between 0 and {MAX_PAGE}")
        statuses = ("", "dispatched", "retry_wait", "succeeded", "failed", "dead", "cancelled")
        if request.status not in statuses:
            raise InvalidArgument("status", f"must be one of {', '.join(s for s in statuses if s)}")
        rows = await self._s.runs.jobs(
            _require_id(request.run_id, "run_id"),
            status=request.status,
            limit=request.limit or DEFAULT_PAGE,
        )
        return runs_pb2.ListJobsResponse(jobs=[convert.job_to_pb(row) for row in rows])

    async def ListHosts(
        self, request: runs_pb2.ListHostsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListHostsResponse:
        states = self._s.hosts.states(datetime.now(UTC))
        return runs_pb2.ListHostsResponse(hosts=[convert.host_to_pb(state) for state in states])

    async def ResetHostBackoff(
        self, request: runs_pb2.ResetHostBackoffRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.HostBackoff:
        host = request.host.strip().lower()
        if not host or len(host) > 253:
            raise InvalidArgument("host", "is required (a host name or address)")
        state = self._s.hosts.reset(host)
        self._s.dispatcher.wake()
        return convert.host_to_pb(state)

    async def GetRun(
        self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return convert.run_to_pb(await self._s.runs.get(_require_id(request.run_id, "run_id")))

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        if request.limit < 0:
            raise InvalidArgument("limit", "must be >= 0")
        runs = await self._s.runs.list_runs(limit=min(request.limit or 50, 1000))
        return runs_pb2.ListRunsResponse(runs=[convert.run_to_pb(run) for run in runs])

    async def GetRunStats(
        self, request: runs_pb2.GetRunStatsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.RunStats:
        return convert.stats_to_pb(await self._s.runs.stats(_require_id(request.run_id, "run_id")))

    async def ListResults(
        self, request: results_pb2.ListResultsRequest, context: grpc.aio.ServicerContext
    ) -> results_pb2.ListResultsResponse:
        if request.limit < 0 or request.limit > MAX_PAGE:
            raise InvalidArgument("limit", f"must be between 0 and {MAX_PAGE}")
        rows, next_after = await self._s.runs.results(
            _require_id(request.run_id, "run_id"),
            after=request.after,
            limit=request.limit or DEFAULT_PAGE,
        )
        return results_pb2.ListResultsResponse(
            results=[convert.result_row_to_pb(row) for row in rows], next_after=next_after
        )

    async def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.Run]:
        async for run in self._s.hub.watch(_require_id(request.run_id, "run_id")):
            yield convert.run_to_pb(run)

    async def ListNodes(
        self, request: node_pb2.ListNodesRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.ListNodesResponse:
        return node_pb2.ListNodesResponse(
            nodes=[convert.node_to_pb(node) for node in self._s.registry.nodes()]
        )

    async def CordonNode(
        self, request: node_pb2.NodeRef, context: grpc.aio.ServicerContext
    ) -> node_pb2.Node:
        node_id = _require_id(request.node_id, "node_id")
        return convert.node_to_pb(await self._s.registry.hold(node_id, NodeState.CORDONED))

    async def DrainNode(
        self, request: node_pb2.NodeRef, context: grpc.aio.ServicerContext
    ) -> node_pb2.Node:
        node_id = _require_id(request.node_id, "node_id")
        return convert.node_to_pb(await self._s.registry.hold(node_id, NodeState.DRAINING))

    async def UncordonNode(
        self, request: node_pb2.NodeRef, context: grpc.aio.ServicerContext
    ) -> node_pb2.Node:
        node_id = _require_id(request.node_id, "node_id")
        return convert.node_to_pb(await self._s.registry.hold(node_id, None))


class NodeLinkServicer(AccountLinkApi, ArtifactLinkApi, node_pb2_grpc.NodeLinkServicer):
    def __init__(self, service: SchedulerService) -> None:
        self._s = service

    async def Register(
        self, request: node_pb2.RegisterNodeRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.RegisterNodeResponse:
        info = node_info_from_pb(request.info)
        _require_id(info.node_id, "info.node_id")
        if info.slots < 0 or info.slots > 10_000:
            raise InvalidArgument("info.slots", "must be between 0 and 10000")
        if not info.engines:
            raise InvalidArgument("info.engines", "a node must serve at least one engine")
        for engine in info.engines:
            if engine not in ("chromium", "firefox", "webkit", "noop"):
                raise InvalidArgument("info.engines", f"unknown engine {engine!r}")
        if len(info.labels) > 4:
            raise InvalidArgument("info.labels", "at most 4 placement labels")
        # Every pool the node may bind must have its consumer before the node binds.
        for pool in bus.node_pools(info.engines, info.labels):
            await self._s.job_bus.ensure_pool(pool)
        await self._s.registry.register(info)
        return node_pb2.RegisterNodeResponse(
            heartbeat_interval_s=self._s.settings.heartbeat_interval.total_seconds()
        )

    async def Heartbeat(
        self, request: node_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.HeartbeatResponse:
        state = convert.NODE_STATE_FROM_PB.get(request.state)
        if state is None:
            raise InvalidArgument("state", "is required")
        node_id = _require_id(request.node_id, "node_id")
        known = await self._s.registry.heartbeat(
            node_id,
            load=node_load_from_pb(request.load),
            state=state,
            slots=max(0, request.slots),
        )
        commands = [
            node_pb2.NodeCommand(cancel_run=run_id) for run_id in self._s.registry.cancelled_runs()
        ]
        order = self._s.registry.order(node_id, state) if known else None
        if order == "drain":
            commands.append(node_pb2.NodeCommand(drain=True))
        elif order is not None:
            commands.append(node_pb2.NodeCommand(cordon=order == "cordon"))
        return node_pb2.HeartbeatResponse(known=known, commands=commands)

    async def ReportResults(
        self, request: node_pb2.ReportResultsRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.ReportResultsResponse:
        if len(request.results) > MAX_RESULTS_PER_REPORT:
            raise InvalidArgument("results", f"at most {MAX_RESULTS_PER_REPORT} results per report")
        results = []
        for position, message in enumerate(request.results):
            _require_id(message.job_id, f"results[{position}].job_id")
            if message.attempt < 1:
                raise InvalidArgument(f"results[{position}].attempt", "must be >= 1")
            try:
                results.append(result_from_pb(message))
            except ValueError as error:
                raise InvalidArgument(f"results[{position}].outcome", str(error)) from None
        stored = await self._s.ingestor.ingest(results)
        return node_pb2.ReportResultsResponse(
            stored=[
                node_pb2.StoredResult(job_id=s.job_id, attempt=s.attempt, new=s.new) for s in stored
            ]
        )

    async def ReportInProgress(
        self, request: node_pb2.ReportInProgressRequest, context: grpc.aio.ServicerContext
    ) -> node_pb2.ReportInProgressResponse:
        if len(request.job_ids) > MAX_RESULTS_PER_REPORT:
            raise InvalidArgument("job_ids", f"at most {MAX_RESULTS_PER_REPORT} per report")
        if request.job_ids:
            await self._s.dispatcher.extend_deadlines(list(request.job_ids))
        return node_pb2.ReportInProgressResponse()


class SchedulerService:
    """Owns the database, the bus connection and the background loops; start() then stop()."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.runs = RunStore(self.db)
        self.ledger = CreditLedger()
        self.hub = RunProgressHub(self.runs)
        self.registry = NodeRegistry(self.db, lost_after=settings.node_lost_after)
        self.hosts = HostLimiter()
        self.ingestor = ResultIngestor(
            db=self.db,
            runs=self.runs,
            ledger=self.ledger,
            hosts=self.hosts,
            on_change=self._on_results,
        )
        self.accounts = AccountStore(
            self.db, SecretBox(key=settings.secret_key, database_url=settings.database_url)
        )
        self.ingestor.accounts = self.accounts
        self.schedules = ScheduleStore(self.db, allowed_hosts=settings.allowed_host_list)
        self.artifacts = ArtifactStore(
            settings.artifact_root,
            retention=settings.artifact_retention,
            max_bytes=settings.artifact_max_mb * 1024**2,
            max_upload_bytes=settings.artifact_max_upload_mb * 1024**2,
        )
        self.schedule_runner = ScheduleRunner(self.schedules, self.runs, on_run=self.changed)
        self._nats: NatsClient | None = None
        self._server: ServiceServer | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self.address = ""

    def _on_results(self, run_ids: set[str]) -> None:
        self.hub.changed(run_ids)
        self.dispatcher.wake()

    def changed(self, run: Run) -> runs_pb2.Run:
        """After a lifecycle call: wake the dispatcher, tell watchers, answer with the run."""
        self.dispatcher.wake()
        self.hub.changed([run.id])
        return convert.run_to_pb(run)

    async def start(self) -> str:
        await self.db.ensure_schema(upgrade=self.settings.database_upgrade)
        self._nats = await bus.connect(self.settings.nats_servers, name="smartfleet-scheduler")
        js = self._nats.jetstream()
        self.job_bus = bus.JobBus(js=js, ack_wait=self.settings.ack_wait)
        await self.job_bus.ensure_stream()
        await self.registry.load()
        self.dispatcher = Dispatcher(
            db=self.db,
            runs=self.runs,
            registry=self.registry,
            ledger=self.ledger,
            js=js,
            hub=self.hub,
            hosts=self.hosts,
            allowed_hosts=self.settings.allowed_host_list,
            interval=self.settings.dispatch_interval,
            recovery_grace=self.settings.recovery_grace,
        )
        self.registry.on_change = self.dispatcher.wake
        self.dispatcher.accounts = self.accounts
        self.hub.start()
        await self.artifacts.start()
        await self.dispatcher.start()
        await self.schedule_runner.start()
        self._maintenance = asyncio.create_task(self._maintain(), name="scheduler-maintenance")
        self._server = ServiceServer(
            listen=self.settings.scheduler_listen,
            service_names=["smartfleet.v1.Scheduler", "smartfleet.v1.NodeLink"],
        )
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(
            SchedulerServicer(self), self._server.server
        )
        node_pb2_grpc.add_NodeLinkServicer_to_server(NodeLinkServicer(self), self._server.server)
        self.address = await self._server.start()
        return self.address

    async def _maintain(self) -> None:
        """Lost nodes, overdue jobs and missed completions, swept periodically."""
        period = max(0.2, self.settings.heartbeat_interval.total_seconds() / 2)
        while True:
            await asyncio.sleep(period)
            try:
                await self.registry.mark_lost()
                await self.dispatcher.recover_overdue()
                completed = await self.runs.complete_finished()
                if completed:
                    self.hub.changed(completed)
            except Exception:
                logger.exception("maintenance sweep failed")

    async def stop(self, grace: timedelta = timedelta(seconds=5)) -> None:
        """Each step bounded: a stuck part is named in the log and shutdown still completes."""
        if self._server:
            server, self._server = self._server, None
            await _bounded(
                "grpc server", server.stop(grace.total_seconds()), grace + STOP_STEP_TIMEOUT
            )
        if self._maintenance:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await _bounded("maintenance", self._maintenance)
            self._maintenance = None
        await _bounded("schedule runner", self.schedule_runner.stop())
        if hasattr(self, "dispatcher"):
            await _bounded("dispatcher", self.dispatcher.stop())
        await _bounded("progress hub", self.hub.stop())
        await _bounded("artifact store", self.artifacts.stop())
        if self._nats:
            nats_client, self._nats = self._nats, None
            await _bounded("nats", bus.close(nats_client))
        await _bounded("database", self.db.close())


STOP_STEP_TIMEOUT = timedelta(seconds=10)


async def _bounded(
    step: str, awaitable: Awaitable[object], limit: timedelta = STOP_STEP_TIMEOUT
) -> None:
    try:
        await asyncio.wait_for(awaitable, limit.total_seconds())
    except TimeoutError:
        logger.warning("shutdown: %s did not stop within %s; going on", step, limit)


async def serve(settings: SchedulerSettings) -> None:
    stop = shutdown_event()
    service = SchedulerService(settings)
    address = await service.start()
    write_ready_file(settings.ready_file, scheduler=address)
    await stop.wait()
    logger.info("scheduler shutting down")
    await service.stop()

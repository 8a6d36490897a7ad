"""The scheduler's gRPC server: the internal Scheduler API for gateways and the NodeLink for nodes.

The parts are built by _wiring.build; this module starts them in order, serves, and stops them
in reverse, each step bounded so one stuck part cannot hang shutdown. What dispatches (node
registry, dispatcher, schedule runner, maintenance) runs only while this scheduler leads
(_leadership.py): always on SQLite, on PostgreSQL while it holds the lease.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from grpc_health.v1 import health_pb2

from services.common.config import SchedulerSettings
from services.common.grpc_server import ServiceServer, compose_service, write_ready_file
from services.common.lifecycle import shutdown_event
from services.common.server_info import ServerInfoApi
from services.scheduler._leadership import LeaderGate, Leadership
from services.scheduler._wiring import SchedulerParts, build
from smartfleet.v1 import fleet_service_pb2, node_link_pb2

logger = logging.getLogger(__name__)

STOP_STEP_TIMEOUT = timedelta(seconds=10)
FLEET_SERVICE = fleet_service_pb2.DESCRIPTOR.services_by_name["FleetService"]
NODE_LINK_SERVICE = node_link_pb2.DESCRIPTOR.services_by_name["NodeLinkService"]


class SchedulerService:
    """The scheduler's parts (attributes of `parts`, also reachable by name here), started by
    `start()` and stopped by `stop()`. It serves FleetService (to gateways) and the node link
    (to nodes) on its internal listener."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.parts: SchedulerParts = build(settings)
        self.leadership = Leadership(
            self.parts.lease,
            ttl=settings.leader_lease,
            on_elected=self._lead,
            on_deposed=self._follow,
        )
        self._server = ServiceServer(
            listen=settings.scheduler_listen,
            service_names=[FLEET_SERVICE.full_name, NODE_LINK_SERVICE.full_name],
            interceptors=[LeaderGate(self.leadership)],
        )
        info = ServerInfoApi(name="scheduler", address=lambda: self.address)
        self._server.server.add_generic_rpc_handlers(
            (
                compose_service(FLEET_SERVICE, *self.parts.scheduler_api, info),
                compose_service(NODE_LINK_SERVICE, *self.parts.node_link_api),
            )
        )
        self._started = False
        self._serving = False
        self.address = ""

    def __getattr__(self, name: str) -> Any:
        # `service.runs`, `service.registry`, …: the parts by name.
        return getattr(self.parts, name)

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    async def start(self) -> str:
        parts = self.parts
        # From here on stop() stops whatever did start (every part's stop is idempotent).
        self._started = True
        if parts.db.dialect == "sqlite":
            # Before anything touches the file: a second scheduler on it stops here, saying why.
            await parts.lease.acquire()
        await parts.db.ensure_schema(upgrade=self.settings.database_upgrade)
        await parts.job_bus.connect()
        await parts.job_bus.ensure_stream()
        parts.hub.start()
        await parts.artifacts.start()
        # Serving first: a standby answers reads and names the leader for the rest.
        self.address = await self._server.start()
        self._serving = True
        await self._set_leading(False)
        parts.lease.address = self.settings.scheduler_advertise or _advertised(self.address)
        await self.leadership.start()
        return self.address

    async def _lead(self, token: int) -> None:
        """Won the lease: rebuild what the leader keeps in memory, then dispatch."""
        parts = self.parts
        # Nodes from the table (no capacity until they heartbeat), credit from the jobs still
        # out, and every one of those republished (the stream drops the copies it holds).
        await parts.registry.load()
        await parts.dispatcher.start()
        await parts.schedule_runner.start()
        parts.maintenance.start()
        self.leadership.accepting = True
        await self._set_leading(True)

    async def _follow(self) -> None:
        """Lost the lease (or stopping): stop everything that dispatches."""
        parts = self.parts
        self.leadership.accepting = False
        await _bounded("maintenance", parts.maintenance.stop())
        await _bounded("schedule runner", parts.schedule_runner.stop())
        await _bounded("dispatcher", parts.dispatcher.stop())
        if self._serving:
            await self._set_leading(False)

    async def _set_leading(self, leading: bool) -> None:
        # Health of the services says who leads; the server's own ("") stays SERVING.
        for name in (FLEET_SERVICE.full_name, NODE_LINK_SERVICE.full_name):
            await self._server.health.set(
                name,
                health_pb2.HealthCheckResponse.SERVING
                if leading
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )

    async def stop(self, grace: timedelta = timedelta(seconds=5)) -> None:
        """Each step bounded: a stuck part is named in the log and shutdown still completes."""
        if not self._started:
            await _bounded("database", self.parts.db.close())
            return
        self._started = False
        parts = self.parts
        if self._serving:
            self._serving = False
            await _bounded(
                "grpc server", self._server.stop(grace.total_seconds()), grace + STOP_STEP_TIMEOUT
            )
        # Steps down (stopping what dispatches) and releases the lease for a standby.
        await _bounded("leadership", self.leadership.stop())
        await _bounded("progress hub", parts.hub.stop())
        await _bounded("artifact store", parts.artifacts.stop())
        await _bounded("nats", parts.job_bus.close())
        await _bounded("lease", parts.lease.release())
        await _bounded("database", parts.db.close())


def _advertised(bound: str) -> str:
    """The bound address as others reach it: a wildcard host becomes this host's name."""
    host, _, port = bound.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = socket.gethostname()
    return f"{host}:{port}"


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

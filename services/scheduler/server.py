"""The scheduler's gRPC server: the internal Scheduler API for gateways and the NodeLink for nodes.

The parts are built by _wiring.build; this module starts them in order, serves, and stops them
in reverse, each step bounded so one stuck part cannot hang shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from services.common.config import SchedulerSettings
from services.common.grpc_server import ServiceServer, compose_service, write_ready_file
from services.common.lifecycle import shutdown_event
from services.common.server_info import ServerInfoApi
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
        self._server = ServiceServer(
            listen=settings.scheduler_listen,
            service_names=[FLEET_SERVICE.full_name, NODE_LINK_SERVICE.full_name],
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

    async def start(self) -> str:
        parts = self.parts
        # From here on stop() stops whatever did start (every part's stop is idempotent).
        self._started = True
        await parts.db.ensure_schema(upgrade=self.settings.database_upgrade)
        await parts.job_bus.connect()
        await parts.job_bus.ensure_stream()
        await parts.registry.load()
        parts.hub.start()
        await parts.artifacts.start()
        await parts.dispatcher.start()
        await parts.schedule_runner.start()
        parts.maintenance.start()
        self.address = await self._server.start()
        self._serving = True
        return self.address

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
        await _bounded("maintenance", parts.maintenance.stop())
        await _bounded("schedule runner", parts.schedule_runner.stop())
        await _bounded("dispatcher", parts.dispatcher.stop())
        await _bounded("progress hub", parts.hub.stop())
        await _bounded("artifact store", parts.artifacts.stop())
        await _bounded("nats", parts.job_bus.close())
        await _bounded("database", parts.db.close())


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

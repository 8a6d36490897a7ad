"""A node stopped the way SIGTERM stops it drains, says `drained` in its last heartbeat, and
stays `drained` after the scheduler's lost-node timeout (it used to turn `lost`); it is also
`drained`, not `lost`, for a scheduler that starts (or takes over) afterwards."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from services.browser_node import BrowserNode
from services.common.config import SchedulerSettings
from services.common.nats_server import EmbeddedNatsServer
from services.common.types import NodeState
from services.scheduler import SchedulerService
from tests.integration.test_browser_node import node_settings

pytestmark = pytest.mark.timeout(60)


def _settings(nats_url: str, database_url: str) -> SchedulerSettings:
    return SchedulerSettings(
        scheduler_listen="127.0.0.1:0",
        database_url=database_url,
        database_upgrade=True,
        nats_url=nats_url,
        heartbeat_interval=timedelta(milliseconds=200),
        node_lost_after=timedelta(seconds=1),
    )


async def _state(service: SchedulerService, node_id: str) -> NodeState | None:
    found = [n.state for n in service.registry.nodes() if n.info.node_id == node_id]
    return found[0] if found else None


async def test_a_stopped_node_is_listed_drained_not_lost(
    tmp_path: Path, nats_server: EmbeddedNatsServer, sqlite_url: str
) -> None:
    """Node up (ready), stopped (drains, last word `drained`), 2 s past the lost timeout still
    `drained`; a fresh scheduler on the same database lists it `drained` too."""
    scheduler = SchedulerService(_settings(nats_server.url, sqlite_url))
    await scheduler.start()
    try:
        node = BrowserNode(
            settings=node_settings(
                tmp_path, nats_server.url, scheduler.address, node_id="drainer", node_engine="noop"
            )
        )
        await node.start()
        for _ in range(300):
            if await _state(scheduler, "drainer") is NodeState.READY:
                break
            await asyncio.sleep(0.1)
        assert await _state(scheduler, "drainer") is NodeState.READY
        await node.stop()
        # The last heartbeat has been answered when stop() returns.
        assert await _state(scheduler, "drainer") is NodeState.DRAINED
        await asyncio.sleep(2.0)  # two lost-node timeouts, several maintenance sweeps
        assert await _state(scheduler, "drainer") is NodeState.DRAINED
    finally:
        await scheduler.stop(grace=timedelta(seconds=0.2))
    successor = SchedulerService(_settings(nats_server.url, sqlite_url))
    await successor.start()
    try:
        assert await _state(successor, "drainer") is NodeState.DRAINED
    finally:
        await successor.stop(grace=timedelta(seconds=0.2))

"""Leader and standbys: the campaign for the lease, and what a standby answers.

A scheduler starts as a standby and tries for the lease (_lease.py) every `ttl / 5`. Holding
it, it leads: `on_elected` starts what dispatches (the node registry, the dispatcher with its
credit rebuilt from the jobs table and its republish of what is out, the schedule runner, the
maintenance sweep). It renews the lease at the same pace; when a renewal is refused (another
scheduler took over) or none has succeeded for 80% of the lease, it steps down (`on_deposed`)
and campaigns again. The fence on every write covers the moments before it notices.

A standby serves the reads that come straight from the database and refuses everything else
with UNAVAILABLE, trailing metadata `smartfleet-standby: 1` and, when a leader is known,
`smartfleet-leader: <its address>` (services/common/leader.py follows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

import grpc

from services.common.grpc_server import rewrap
from services.common.leader import LEADER_KEY, STANDBY_KEY
from services.scheduler._lease import Lease

logger = logging.getLogger(__name__)

# Scheduler RPCs a standby answers itself: they read only the database.
STANDBY_READS = frozenset(
    {
        "GetRun",
        "ListRuns",
        "GetRunStats",
        "ListResults",
        "ListJobs",
        "GetAccount",
        "ListAccounts",
        "GetSchedule",
        "ListSchedules",
        "GetServerInfo",
    }
)
FLEET_SERVICE = "smartfleet.v1.FleetService"
GATED_SERVICES = frozenset({FLEET_SERVICE, "smartfleet.v1.NodeLinkService"})


class Leadership:
    """Campaigns for the lease and runs `on_elected` / `on_deposed` as it is won and lost."""

    def __init__(
        self,
        lease: Lease,
        *,
        ttl: timedelta,
        on_elected: Callable[[int], Coroutine[Any, Any, None]],
        on_deposed: Callable[[], Awaitable[None]],
    ) -> None:
        self._lease = lease
        self._ttl = ttl
        self._every = max(ttl / 5, timedelta(milliseconds=100))
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._task: asyncio.Task[None] | None = None
        self._leading: asyncio.Task[None] | None = None
        self.is_leader = False
        # Set by the leader once what it keeps in memory is rebuilt: until then (and on a
        # standby) the gate refuses what only a leader answers.
        self.accepting = False
        # The leader's address as last read (what a standby's refusal names).
        self.leader_address = ""

    async def start(self) -> None:
        """One campaign round now (a lone scheduler leads when this returns), then the loop."""
        await self._round(asyncio.get_running_loop().time())
        if self._leading is not None:
            await asyncio.shield(self._leading)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="leadership")

    async def stop(self) -> None:
        """Step down (if leading) and let the lease go, so a standby takes over at once."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._step_down("stopping")
        try:
            await self._lease.release()
        except Exception as error:
            logger.warning("could not release the leader lease (it will expire): %s", error)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            await asyncio.sleep(self._every.total_seconds())
            renewed = await self._round(renewed)

    async def _round(self, renewed: float) -> float:
        """One renewal (leader) or attempt (standby); returns when the lease was last held."""
        now = asyncio.get_running_loop().time()
        try:
            if self.is_leader:
                if await self._lease.renew():
                    return now
                await self._step_down("another scheduler took the lease")
            elif await self._lease.acquire():
                self._elected(self._lease.token or 0)
                return now
            self.leader_address = await self._lease.leader_address()
        except Exception as error:
            if self.is_leader and now - renewed > 0.8 * self._ttl.total_seconds():
                await self._step_down(f"the lease could not be renewed ({error})")
            else:
                logger.warning("leader lease: %s", error)
        return renewed

    def _elected(self, token: int) -> None:
        self.is_leader = True
        self.leader_address = getattr(self._lease, "address", "")
        logger.info("leading the schedulers (lease token %d)", token)
        self._leading = asyncio.get_running_loop().create_task(
            self._on_elected(token), name="leader-start"
        )
        self._leading.add_done_callback(_log_failure)

    async def _step_down(self, why: str) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        level = logging.INFO if why == "stopping" else logging.WARNING
        logger.log(level, "no longer the leader: %s", why)
        leading, self._leading = self._leading, None
        if leading is not None and not leading.done():
            leading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await leading
        await self._on_deposed()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("taking the lead failed", exc_info=task.exception())


class LeaderGate(grpc.aio.ServerInterceptor):
    """On a standby, refuses what only the leader may answer, naming the leader."""

    def __init__(self, leadership: Leadership) -> None:
        self._leadership = leadership

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or self._leadership.accepting:
            return handler
        service, _, name = handler_call_details.method.strip("/").partition("/")
        if service not in GATED_SERVICES:
            return handler
        if service == FLEET_SERVICE and name in STANDBY_READS:
            return handler
        leadership = self._leadership

        async def refuse(context: grpc.aio.ServicerContext) -> None:
            leader = leadership.leader_address
            metadata: tuple[tuple[str, str], ...] = ((STANDBY_KEY, "1"),)
            if leader:
                metadata += ((LEADER_KEY, leader),)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"this scheduler is a standby; the leader is at {leader or 'an unknown address'}",
                trailing_metadata=metadata,
            )

        if handler.response_streaming:

            async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await refuse(context)
                yield  # pragma: no cover -- a generator, as the handler's shape requires

            return rewrap(handler, refuse_stream)

        async def refuse_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await refuse(context)

        return rewrap(handler, refuse_unary)

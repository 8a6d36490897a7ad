"""The node's gRPC client to the scheduler (NodeLink): register, heartbeat, report results,
fetch and write back account state.

The adapter of the node link: the only module of the node that touches protobuf messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import grpc

from services.browser_node._accounts import (
    AccountRefused,
    AccountState,
    AccountStateUnavailable,
    storage_state_from_json,
    storage_state_to_json,
)
from services.browser_node._backoff import Backoff
from services.common.contracts import from_duration, node_info_to_pb, node_load_to_pb, result_to_pb
from services.common.errors import SmartfleetError, Unavailable
from services.common.leader import LeaderChannels, split_addresses
from services.common.types import NodeInfo, NodeLoad, NodeState, SessionResult
from smartfleet.v1 import node_link_pb2, node_link_pb2_grpc, nodes_pb2

logger = logging.getLogger(__name__)

# Worth trying again later: the scheduler is restarting, overloaded or briefly failing.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
_MIN_INTERVAL = timedelta(milliseconds=100)
_MAX_INTERVAL = timedelta(minutes=1)
_DEFAULT_INTERVAL = timedelta(seconds=2)
# Job ids per ReportInProgress call (the scheduler accepts up to 1000).
_IN_PROGRESS_CHUNK = 500
_UPLOAD_CHUNK = 256 * 1024

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """What a heartbeat tells the scheduler about this node."""

    load: NodeLoad
    state: NodeState
    slots: int
    # Jobs to report in progress, so the scheduler does not recover them meanwhile.
    in_flight: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetSlots:
    slots: int


@dataclass(frozen=True, slots=True)
class Drain:
    pass


@dataclass(frozen=True, slots=True)
class Cordon:
    """on: take no new jobs; off: take jobs again (also ends a drain)."""

    on: bool


@dataclass(frozen=True, slots=True)
class CancelRun:
    run_id: str


NodeCommand = SetSlots | Drain | Cordon | CancelRun


def _error_from(error: grpc.aio.AioRpcError, call: str) -> SmartfleetError:
    message = f"scheduler {call}: {error.code().name}: {error.details() or 'no details'}"
    if error.code() in _RETRYABLE:
        return Unavailable(message)
    return SmartfleetError(message)


# The scheduler's answer about the account itself (unknown, not to be used), not about itself.
# FAILED_PRECONDITION is not one: the scheduler says it when this node is not registered (yet)
# or its secret key cannot decrypt the state, which no other account would fix either.
_ACCOUNT_REFUSALS = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED})


def _account_error(error: grpc.aio.AioRpcError, call: str, account: str) -> SmartfleetError:
    details = error.details() or "no details"
    if error.code() in _ACCOUNT_REFUSALS:
        return AccountRefused(account, f"the scheduler refused it ({error.code().name}: {details})")
    return AccountStateUnavailable(
        f"scheduler {call} for account {account!r}: {error.code().name}: {details}"
    )


def _node_link(channel: grpc.aio.Channel) -> node_link_pb2_grpc.NodeLinkServiceAsyncStub:
    return node_link_pb2_grpc.NodeLinkServiceStub(channel)  # type: ignore[return-value]


def _command_from_pb(message: node_link_pb2.NodeCommand) -> NodeCommand | None:
    kind = message.WhichOneof("command")
    if kind == "set_slots":
        return SetSlots(message.set_slots)
    if kind == "drain" and message.drain:
        return Drain()
    if kind == "cordon":
        return Cordon(message.cordon)
    if kind == "cancel_run":
        return CancelRun(message.cancel_run)
    return None


class SchedulerLink:
    """Registers the node, heartbeats in a background task, and carries result reports.

    It keeps going across scheduler outages (backoff, then re-register when the scheduler says it
    does not know the node). `registered` is set once the first Register succeeded. `address`
    may list several schedulers (comma-separated): every call goes to the one that leads
    (services/common/leader.py), and the node's heartbeats, reports and final `drained` follow
    a takeover by themselves.
    """

    def __init__(
        self,
        *,
        address: str,
        info: Callable[[], NodeInfo],
        status: Callable[[], NodeStatus],
        on_command: Callable[[NodeCommand], None],
        call_timeout: timedelta = timedelta(seconds=5),
    ) -> None:
        self._channels = LeaderChannels(split_addresses(address))
        self._info = info
        self._status = status
        self._on_command = on_command
        self._call_timeout = call_timeout
        self._task: asyncio.Task[None] | None = None
        self._known = False
        self.registered = asyncio.Event()
        self.heartbeat_interval = _DEFAULT_INTERVAL

    @property
    def node_id(self) -> str:
        return self._info().node_id

    @property
    def _address(self) -> str:
        return self._channels.current

    async def _call(
        self,
        invoke: Callable[[node_link_pb2_grpc.NodeLinkServiceAsyncStub], Awaitable[T]],
        call: str,
    ) -> T:
        """One NodeLink call on the leading scheduler (every node call is safe to repeat);
        the scheduler's error as SmartfleetError (Unavailable when a retry may work)."""
        try:
            return await self._channels.call(
                invoke, stub=_node_link, timeout=self._call_timeout * 2, idempotent=True
            )
        except grpc.aio.AioRpcError as error:
            raise _error_from(error, call) from error

    def start(self) -> None:
        """Start registering and heartbeating in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler-link")

    async def stop(self) -> None:
        """Send a last heartbeat (so the scheduler sees the final state), then close the channel."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self._known:
                # The last word: `drained` (or whatever the node ended in) is what the
                # scheduler shows from now on, not `lost`.
                with contextlib.suppress(SmartfleetError):
                    await self.heartbeat()
        await self._channels.close(grace=1.0)

    async def register(self) -> timedelta:
        """One Register call; returns (and keeps) the heartbeat interval the scheduler wants."""
        request = node_link_pb2.RegisterNodeRequest(info=node_info_to_pb(self._info()))
        timeout = self._call_timeout.total_seconds()
        reply = await self._call(
            lambda stub: stub.RegisterNode(request, timeout=timeout), "RegisterNode"
        )
        interval = from_duration(reply.heartbeat_interval) or _DEFAULT_INTERVAL
        self.heartbeat_interval = min(max(interval, _MIN_INTERVAL), _MAX_INTERVAL)
        self._known = True
        self.registered.set()
        return self.heartbeat_interval

    async def heartbeat(self, *, timeout: timedelta | None = None) -> bool:
        """One Heartbeat; hands its commands to `on_command`. False when the node must re-register."""
        status = self._status()
        request = node_link_pb2.HeartbeatRequest(
            node_id=self.node_id,
            load=node_load_to_pb(status.load),
            state=nodes_pb2.NodeState.Value(f"NODE_STATE_{status.state.name}"),
            slots=status.slots,
        )
        seconds = (timeout or self._call_timeout).total_seconds()
        reply = await self._call(lambda stub: stub.Heartbeat(request, timeout=seconds), "Heartbeat")
        for message in reply.commands:
            command = _command_from_pb(message)
            if command is not None:
                self._on_command(command)
        return reply.known

    async def report_results(self, results: Sequence[SessionResult]) -> set[tuple[str, int]]:
        """Report a batch; returns the (job_id, attempt) pairs the scheduler says it stored.

        Raises Unavailable when trying again later may work, SmartfleetError otherwise.
        """
        request = node_link_pb2.ReportResultsRequest(
            node_id=self.node_id, results=[result_to_pb(result) for result in results]
        )
        timeout = self._call_timeout.total_seconds()
        reply = await self._call(
            lambda stub: stub.ReportResults(request, timeout=timeout), "ReportResults"
        )
        return {(stored.job_id, stored.attempt) for stored in reply.stored}

    async def report_in_progress(self, job_ids: Sequence[str]) -> None:
        request = node_link_pb2.ReportInProgressRequest(node_id=self.node_id, job_ids=list(job_ids))
        timeout = self._call_timeout.total_seconds()
        await self._call(
            lambda stub: stub.ReportInProgress(request, timeout=timeout), "ReportInProgress"
        )

    async def get_account_state(self, account: str, *, job_id: str) -> AccountState:
        """The account's storage state and proxy, for a job this node runs as the account.
        Raises AccountRefused or AccountStateUnavailable."""
        request = node_link_pb2.GetAccountStateRequest(
            node_id=self.node_id, account=account, job_id=job_id
        )
        timeout = self._call_timeout.total_seconds()
        try:
            reply = await self._channels.call(
                lambda stub: stub.GetAccountState(request, timeout=timeout),
                stub=_node_link,
                timeout=self._call_timeout * 2,
                idempotent=True,
            )
        except grpc.aio.AioRpcError as error:
            raise _account_error(error, "GetAccountState", account) from error
        return AccountState(
            account=account,
            storage_state=storage_state_from_json(account, reply.storage_state),
            proxy=reply.proxy,
        )

    async def put_account_state(self, state: AccountState, *, job_id: str) -> None:
        """Write back an account's storage state (the node never sets a proxy)."""
        request = node_link_pb2.PutAccountStateRequest(
            node_id=self.node_id,
            account=state.account,
            job_id=job_id,
            storage_state=storage_state_to_json(state.storage_state),
        )
        timeout = self._call_timeout.total_seconds()
        try:
            await self._channels.call(
                lambda stub: stub.PutAccountState(request, timeout=timeout),
                stub=_node_link,
                timeout=self._call_timeout * 2,
                idempotent=True,
            )
        except grpc.aio.AioRpcError as error:
            raise _account_error(error, "PutAccountState", state.account) from error

    async def put_artifact(
        self, *, run_id: str, job_id: str, attempt: int, name: str, path: Path
    ) -> str:
        """Upload one artifact file into the scheduler's store; returns its key.

        Raises Unavailable when trying again later may work, SmartfleetError otherwise.
        """
        size = (await asyncio.to_thread(path.stat)).st_size
        header = node_link_pb2.ArtifactHeader(
            node_id=self.node_id,
            run_id=run_id,
            job_id=job_id,
            attempt=attempt,
            name=name,
            size_bytes=size,
        )

        async def messages() -> AsyncIterator[node_link_pb2.PutArtifactRequest]:
            yield node_link_pb2.PutArtifactRequest(header=header)
            with path.open("rb") as handle:
                while chunk := await asyncio.to_thread(handle.read, _UPLOAD_CHUNK):
                    yield node_link_pb2.PutArtifactRequest(data=chunk)

        # Large artifacts get time in proportion (at least 1 MB/s) on top of the call timeout.
        timeout = self._call_timeout.total_seconds() + size / 1e6
        # A fresh stream of the file for every try (a standby may refuse the first).
        reply = await self._call(
            lambda stub: stub.PutArtifact(messages(), timeout=timeout), "PutArtifact"
        )
        return str(reply.key)

    async def _run(self) -> None:
        backoff = Backoff(initial=timedelta(milliseconds=250), maximum=timedelta(seconds=10))
        outage = False
        while True:
            try:
                if not self._known:
                    await self.register()
                    logger.info(
                        "registered with the scheduler at %s (heartbeat every %.1fs)",
                        self._address,
                        self.heartbeat_interval.total_seconds(),
                    )
                elif not await self.heartbeat():
                    logger.warning(
                        "the scheduler does not know this node (it restarted?); registering again"
                    )
                    self._known = False
                    continue
                else:
                    in_flight = self._status().in_flight
                    for start in range(0, len(in_flight), _IN_PROGRESS_CHUNK):
                        await self.report_in_progress(in_flight[start : start + _IN_PROGRESS_CHUNK])
            except SmartfleetError as error:
                if not outage:
                    # Unavailable: the scheduler is away. Anything else: it refuses us (config?).
                    level = logging.WARNING if isinstance(error, Unavailable) else logging.ERROR
                    logger.log(level, "%s; retrying with backoff", error.message)
                outage = True
                await asyncio.sleep(backoff.next().total_seconds())
                continue
            if outage:
                logger.info("the scheduler at %s answers again", self._address)
            outage = False
            backoff.reset()
            await asyncio.sleep(self.heartbeat_interval.total_seconds())

"""Clients of several schedulers: one channel per address, calls go to the leader.

Nodes and gateways are given every scheduler's address (`--scheduler-addr a:50052,b:50052`).
A call goes to the scheduler that answered last. A standby refuses what only the leader
answers with UNAVAILABLE and trailing metadata `smartfleet-standby: 1`, plus
`smartfleet-leader: <address>` when it knows the leader: the call is sent there at once (if that
address is one of ours), or to the next address in turn. A scheduler that cannot be reached
is passed over the same way. With one address nothing changes: errors come back as they are.

Only a call that was surely not executed is sent again (a standby's refusal, or no connection
at all) unless the caller says its call is idempotent (`idempotent=True`): a create that
reached a leader which died before answering must not be made twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import grpc

logger = logging.getLogger(__name__)

STANDBY_KEY = "smartfleet-standby"
LEADER_KEY = "smartfleet-leader"
# Between two rounds over every address (all refused or unreachable: a takeover under way).
ROUND_PAUSE = timedelta(milliseconds=250)
# Reconnects to a scheduler that went away are tried at least this often (gRPC's default
# backoff grows to 2 minutes, far longer than a takeover).
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 16 << 20),
)

_MOVE_ON = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

T = TypeVar("T")
StubT = TypeVar("StubT")


def split_addresses(value: str) -> list[str]:
    """`a:1, b:2` → ['a:1', 'b:2'], repeats dropped, order kept."""
    return list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


def refusal_of(error: grpc.aio.AioRpcError) -> tuple[bool, str]:
    """(a standby refused it, the leader it named or '')."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False, ""
    metadata = dict(error.trailing_metadata() or ())
    standby = str(metadata.get(STANDBY_KEY, "")) == "1"
    return standby, str(metadata.get(LEADER_KEY, "")) if standby else ""


def never_sent(error: grpc.aio.AioRpcError) -> bool:
    """True when the call surely did not reach a scheduler (no connection could be made)."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (error.details() or "").lower()
    return "failed to connect" in details or "connection refused" in details


class LeaderChannels:
    """A channel per scheduler address and which one leads, as far as this client knows."""

    def __init__(
        self, addresses: Sequence[str], *, options: Sequence[tuple[str, Any]] = ()
    ) -> None:
        self.addresses = list(dict.fromkeys(addresses))
        if not self.addresses:
            raise ValueError("at least one scheduler address is needed")
        self._options = [*CHANNEL_OPTIONS, *options]
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, object], Any] = {}
        self._current = 0

    @property
    def current(self) -> str:
        return self.addresses[self._current]

    def channel(self, address: str | None = None) -> grpc.aio.Channel:
        address = address or self.current
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(
                address, options=self._options
            )
        return channel

    def stub(self, stub_class: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        """A stub of `stub_class` on the current scheduler's channel (kept per channel)."""
        key = (self.current, stub_class)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = stub_class(self.channel())
        return stub

    def passed_over(self, error: grpc.aio.AioRpcError) -> bool:
        """Note a failed call; True when the next call goes to another scheduler: after a
        refusal, no connection, or no answer in time (a host cut off sends no RST)."""
        if len(self.addresses) == 1 or error.code() not in _MOVE_ON:
            return False
        _, leader = refusal_of(error)
        if leader and leader in self.addresses and leader != self.current:
            self._current = self.addresses.index(leader)
        else:
            self._current = (self._current + 1) % len(self.addresses)
        logger.info("scheduler: trying %s (%s)", self.current, error.details() or error.code().name)
        return True

    async def call(
        self,
        invoke: Callable[[StubT], Awaitable[T]],
        *,
        stub: Callable[[grpc.aio.Channel], StubT],
        timeout: timedelta,
        idempotent: bool = False,
    ) -> T:
        """`invoke(stub)` on the leader, following refusals within `timeout` in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        tried = 0
        while True:
            try:
                return await invoke(self.stub(stub))
            except grpc.aio.AioRpcError as error:
                standby, _ = refusal_of(error)
                again = standby or never_sent(error) or idempotent
                # The next call goes elsewhere either way; this one is sent again only if safe.
                moved = self.passed_over(error)
                if not (again and moved) or loop.time() >= deadline:
                    raise
                tried += 1
                if tried % len(self.addresses) == 0:
                    pause = min(ROUND_PAUSE.total_seconds(), max(0.0, deadline - loop.time()))
                    await asyncio.sleep(pause)

    async def stream(
        self,
        invoke: Callable[[StubT], AsyncIterator[T]],
        *,
        stub: Callable[[grpc.aio.Channel], StubT],
        timeout: timedelta,
    ) -> AsyncIterator[T]:
        """The messages of a server stream from the leader. A stream refused or unreachable
        before its first message is opened again elsewhere, within `timeout`; one that breaks
        later ends with its error (the caller decides whether to resume)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        tried = 0
        while True:
            received = False
            try:
                async for message in invoke(self.stub(stub)):
                    received = True
                    yield message
                return
            except grpc.aio.AioRpcError as error:
                standby, _ = refusal_of(error)
                again = not received and (standby or never_sent(error))
                moved = self.passed_over(error)
                if not (again and moved) or loop.time() >= deadline:
                    raise
                tried += 1
                if tried % len(self.addresses) == 0:
                    await asyncio.sleep(ROUND_PAUSE.total_seconds())

    async def close(self, grace: float | None = None) -> None:
        channels, self._channels = self._channels, {}
        self._stubs.clear()
        for channel in channels.values():
            await channel.close(grace)

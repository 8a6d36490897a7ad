"""Clients of several schedulers: which address the next call goes to after a refusal."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import Metadata

from services.common.config import GatewaySettings, NodeSettings
from services.common.leader import (
    LEADER_KEY,
    STANDBY_KEY,
    LeaderChannels,
    never_sent,
    refusal_of,
    split_addresses,
)


def _error(
    code: grpc.StatusCode, details: str = "", trailing: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, Metadata(), Metadata(*trailing), details)


def test_addresses_are_split_trimmed_and_deduplicated() -> None:
    """`a:1, b:2,a:1,` is two addresses in their order; settings read the same list."""
    assert split_addresses("a:1, b:2,a:1,") == ["a:1", "b:2"]
    assert NodeSettings(scheduler_addr="a:1,b:2").scheduler_addrs == ["a:1", "b:2"]
    assert GatewaySettings(scheduler_addr="b:2 , a:1").scheduler_addrs == ["b:2", "a:1"]


def test_a_standby_refusal_names_the_leader() -> None:
    """UNAVAILABLE with the standby marker is a refusal; its leader hint is read; other
    errors are not refusals."""
    refused = _error(
        grpc.StatusCode.UNAVAILABLE, trailing=((STANDBY_KEY, "1"), (LEADER_KEY, "b:2"))
    )
    assert refusal_of(refused) == (True, "b:2")
    assert refusal_of(_error(grpc.StatusCode.UNAVAILABLE)) == (False, "")
    assert refusal_of(_error(grpc.StatusCode.NOT_FOUND, trailing=((STANDBY_KEY, "1"),))) == (
        False,
        "",
    )


def test_only_a_failed_connection_counts_as_never_sent() -> None:
    """A call that never connected may be sent again; one that was dropped may have run."""
    assert never_sent(_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses"))
    assert not never_sent(_error(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    assert not never_sent(_error(grpc.StatusCode.INTERNAL, "failed to connect"))


async def test_the_next_call_follows_the_hint_else_the_next_address() -> None:
    """A hint among our addresses is followed; a hint elsewhere, none, or a deadline passed
    moves to the next in turn; other errors and a single address change nothing."""
    channels = LeaderChannels(["a:1", "b:2", "c:3"])
    hint = _error(grpc.StatusCode.UNAVAILABLE, trailing=((STANDBY_KEY, "1"), (LEADER_KEY, "c:3")))
    assert channels.passed_over(hint) and channels.current == "c:3"
    elsewhere = _error(
        grpc.StatusCode.UNAVAILABLE, trailing=((STANDBY_KEY, "1"), (LEADER_KEY, "x:9"))
    )
    assert channels.passed_over(elsewhere) and channels.current == "a:1"
    assert not channels.passed_over(_error(grpc.StatusCode.PERMISSION_DENIED))
    assert channels.current == "a:1"
    # No answer in time (a scheduler's host cut off): the next call goes to the next one.
    assert channels.passed_over(_error(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert channels.current == "b:2"
    single = LeaderChannels(["a:1"])
    assert not single.passed_over(hint) and single.current == "a:1"
    with pytest.raises(ValueError):
        LeaderChannels([])

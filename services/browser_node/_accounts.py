"""Accounts on the node: their storage state and proxy from the scheduler, cached briefly.

Storage state is a secret (session cookies): it is never logged, and kept only in memory.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from playwright.async_api import ProxySettings

from services.common.errors import SmartfleetError, Unavailable

# Accounts whose state stays cached (least recently used go first).
_MAX_CACHED = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountState:
    account: str
    # Playwright storage state ({"cookies": [...], "origins": [...]}); None: start empty.
    storage_state: dict[str, Any] | None = field(default=None, repr=False)
    proxy: str = field(default="", repr=False)


class AccountRefused(SmartfleetError):
    """The scheduler will not hand out this account (unknown, disabled, bad state): another may do."""

    def __init__(self, account: str, reason: str) -> None:
        super().__init__(f"account {account!r}: {reason}")
        self.account = account


class AccountStateUnavailable(Unavailable):
    """The account's state could not be fetched or stored right now (the scheduler is away)."""


class AccountStateSource(Protocol):
    """Where account state lives: the scheduler, through the node link."""

    async def get_account_state(self, account: str, *, job_id: str) -> AccountState: ...

    async def put_account_state(self, state: AccountState, *, job_id: str) -> None: ...


def storage_state_from_json(account: str, data: bytes) -> dict[str, Any] | None:
    """Parse Playwright storage-state JSON; empty means no state. Raises AccountRefused."""
    if not data.strip():
        return None
    try:
        state = json.loads(data)
    except ValueError:
        raise AccountRefused(account, "its storage state is not JSON") from None
    if not isinstance(state, dict) or not isinstance(state.get("cookies", []), list):
        raise AccountRefused(account, "its storage state is not Playwright storage-state JSON")
    return state


def storage_state_to_json(state: dict[str, Any] | None) -> bytes:
    return json.dumps(state, separators=(",", ":")).encode() if state is not None else b""


def proxy_settings(proxy: str) -> ProxySettings | None:
    """Playwright's proxy settings from `http://user:pass@host:port` (credentials optional)."""
    if not proxy:
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    server = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    settings = ProxySettings(server=server)
    if parts.username:
        settings["username"] = unquote(parts.username)
        settings["password"] = unquote(parts.password or "")
    return settings


class AccountStates:
    """The accounts' state, fetched from the scheduler and kept for `ttl`.

    A new browser for an account always fetches afresh (`fresh=True`); sessions in a running
    browser reuse the cached state. A write-back updates the cache too, so the next session on
    this node starts from what the last one ended with.
    """

    def __init__(
        self, *, source: AccountStateSource, ttl: timedelta = timedelta(seconds=30)
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._cache: OrderedDict[str, tuple[float, AccountState]] = OrderedDict()
        self.fetches = 0

    async def get(self, account: str, *, job_id: str, fresh: bool = False) -> AccountState:
        cached = self._cache.get(account)
        if (
            not fresh
            and cached is not None
            and time.monotonic() - cached[0] < self._ttl.total_seconds()
        ):
            self._cache.move_to_end(account)
            return cached[1]
        self.fetches += 1
        state = await self._source.get_account_state(account, job_id=job_id)
        self._remember(state)
        return state

    async def write_back(self, account: str, storage_state: dict[str, Any], *, job_id: str) -> None:
        """Store the state a session ended with (only the storage state: never the proxy)."""
        await self._source.put_account_state(
            AccountState(account=account, storage_state=storage_state), job_id=job_id
        )
        cached = self._cache.get(account)
        base = cached[1] if cached is not None else AccountState(account=account)
        self._remember(replace(base, storage_state=storage_state))

    def forget(self, account: str) -> None:
        self._cache.pop(account, None)

    def _remember(self, state: AccountState) -> None:
        self._cache[state.account] = (time.monotonic(), state)
        self._cache.move_to_end(state.account)
        while len(self._cache) > _MAX_CACHED:
            self._cache.popitem(last=False)

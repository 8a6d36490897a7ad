"""Accounts: named identities for sessions that need a login, and their assignment to jobs.

Storage state is validated as Playwright storage-state JSON and kept only as a Fernet token;
the public API says whether an account has one, the node link alone reads it back.

Assignment is round-robin by a turn counter kept on each account (the least recently assigned
matching account goes next, across restarts too). `sessions_per_hour` counts the sessions
assigned in the last hour from the `account_uses` table: one row per assignment, pruned after an
hour, so the limit holds across a scheduler restart.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, select

from services.common.errors import AlreadyExists, NotFound
from services.common.spec import AccountSelector
from services.scheduler._account_rules import (
    DEFAULT_COOLDOWN,
    check_cooldown,
    check_labels,
    check_name,
    check_proxy,
    check_sessions_per_hour,
    check_status,
    check_storage_state,
    mask_proxy,
)
from services.scheduler._db import Database
from services.scheduler._models import AccountRow, AccountUseRow
from services.scheduler._secrets import SecretBox

logger = logging.getLogger(__name__)

AccountStatus = Literal["active", "cooling", "disabled"]
USE_WINDOW = timedelta(hours=1)
PRUNE_EVERY = timedelta(minutes=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    name: str
    labels: dict[str, str]
    proxy: str
    sessions_per_hour: int
    cooldown: timedelta
    # "cooling" when active but resting after an account-class failure.
    status: AccountStatus
    cooldown_until: datetime | None
    has_storage_state: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: AccountRow, *, now: datetime) -> Account:
        cooling = row.cooldown_until is not None and row.cooldown_until > now
        status: AccountStatus = "disabled" if row.status == "disabled" else "active"
        return cls(
            name=row.name,
            labels=dict(row.labels),
            proxy=row.proxy,
            sessions_per_hour=row.sessions_per_hour,
            cooldown=timedelta(seconds=row.cooldown_s),
            status="cooling" if cooling and status == "active" else status,
            cooldown_until=row.cooldown_until if cooling else None,
            has_storage_state=row.storage_state is not None,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountChanges:
    """An update: None leaves a field alone; `storage_state=b""` removes the stored state."""

    labels: dict[str, str] | None = None
    proxy: str | None = None
    sessions_per_hour: int | None = None
    cooldown: timedelta | None = None
    status: str | None = None
    storage_state: bytes | None = None


def selects(selector: AccountSelector, row: AccountRow) -> bool:
    """Names and labels both given: the account must be named and carry every label."""
    if selector.names and row.name not in selector.names:
        return False
    return all(row.labels.get(key) == value for key, value in selector.labels.items())


class AccountStore:
    def __init__(self, db: Database, secrets: SecretBox) -> None:
        self._db = db
        self._secrets = secrets
        # One assignment at a time: the hourly count and the turn are read, then written.
        self._assigning = asyncio.Lock()
        self._pruned_at: datetime | None = None

    async def create(
        self,
        name: str,
        *,
        labels: dict[str, str],
        proxy: str = "",
        sessions_per_hour: int = 0,
        cooldown: timedelta | None = None,
        status: str = "active",
        storage_state: bytes = b"",
    ) -> Account:
        now = datetime.now(UTC)
        row = AccountRow(
            name=check_name(name),
            labels=check_labels(labels),
            **self._proxy_values(check_proxy(proxy)),
            sessions_per_hour=check_sessions_per_hour(sessions_per_hour),
            cooldown_s=check_cooldown(cooldown or DEFAULT_COOLDOWN).total_seconds(),
            status=check_status(status or "active"),
            cooldown_until=None,
            storage_state=self._seal(name, storage_state),
            last_turn=0,
            created_at=now,
            updated_at=now,
        )
        async with self._db.write() as session:
            if await session.get(AccountRow, row.name) is not None:
                raise AlreadyExists("account", row.name)
            session.add(row)
        logger.info("account %s created (storage state: %s)", row.name, bool(storage_state))
        return Account.from_row(row, now=now)

    async def update(self, name: str, changes: AccountChanges) -> Account:
        now = datetime.now(UTC)
        values: dict[str, object] = {}
        if changes.labels is not None:
            values["labels"] = check_labels(changes.labels)
        proxy = check_proxy(changes.proxy) if changes.proxy is not None else None
        if changes.sessions_per_hour is not None:
            values["sessions_per_hour"] = check_sessions_per_hour(changes.sessions_per_hour)
        if changes.cooldown is not None:
            values["cooldown_s"] = check_cooldown(changes.cooldown).total_seconds()
        if changes.status is not None:
            values["status"] = check_status(changes.status)
            if values["status"] == "active":
                values["cooldown_until"] = None  # an operator's enable also ends a cooldown
        if changes.storage_state is not None:
            values["storage_state"] = self._seal(name, changes.storage_state)
        async with self._db.write() as session:
            row = await session.get(AccountRow, name)
            if row is None:
                raise NotFound("account", name)
            # The masked proxy the API showed, sent back unchanged, keeps the stored password.
            if proxy is not None and not (proxy == row.proxy and row.proxy_sealed is not None):
                values.update(self._proxy_values(proxy))
            for field, value in values.items():
                setattr(row, field, value)
            row.updated_at = now
        logger.info("account %s updated (%s)", name, ", ".join(sorted(values)) or "nothing")
        return Account.from_row(row, now=now)

    async def get(self, name: str) -> Account:
        async with self._db.read() as session:
            row = await session.get(AccountRow, name)
            if row is None:
                raise NotFound("account", name)
            return Account.from_row(row, now=datetime.now(UTC))

    async def list_accounts(self) -> list[Account]:
        now = datetime.now(UTC)
        async with self._db.read() as session:
            rows = await session.scalars(select(AccountRow).order_by(AccountRow.name))
            return [Account.from_row(row, now=now) for row in rows]

    async def delete(self, name: str) -> None:
        async with self._db.write() as session:
            deleted = await session.execute(
                delete(AccountRow).where(AccountRow.name == name).returning(AccountRow.name)
            )
            if deleted.first() is None:
                raise NotFound("account", name)
            await session.execute(delete(AccountUseRow).where(AccountUseRow.account == name))
        logger.info("account %s deleted", name)

    # ------------------------------------------------------------------ dispatcher and ingestor

    async def assign(self, selector: AccountSelector, *, now: datetime) -> str | None:
        """The next matching account that is active, not cooling down and under its hourly
        limit (round-robin), recorded as used at `now`; None when none is available."""
        async with self._assigning, self._db.write() as session:
            statement = select(AccountRow).where(
                AccountRow.status == "active",
                (AccountRow.cooldown_until.is_(None)) | (AccountRow.cooldown_until <= now),
            )
            if selector.names:
                statement = statement.where(AccountRow.name.in_(selector.names))
            rows = [row for row in await session.scalars(statement) if selects(selector, row)]
            if not rows:
                return None
            rows.sort(key=lambda row: (row.last_turn, row.name))
            limited = [row.name for row in rows if row.sessions_per_hour > 0]
            used: dict[str, int] = {}
            if limited:
                used = {
                    account: count
                    for account, count in await session.execute(
                        select(AccountUseRow.account, func.count())
                        .where(
                            AccountUseRow.account.in_(limited),
                            AccountUseRow.used_at > now - USE_WINDOW,
                        )
                        .group_by(AccountUseRow.account)
                    )
                }
            chosen = next(
                (
                    row
                    for row in rows
                    if row.sessions_per_hour <= 0 or used.get(row.name, 0) < row.sessions_per_hour
                ),
                None,
            )
            if chosen is None:
                return None
            turn = await session.scalar(select(func.coalesce(func.max(AccountRow.last_turn), 0)))
            chosen.last_turn = int(turn or 0) + 1
            session.add(AccountUseRow(account=chosen.name, used_at=now))
            if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
                await session.execute(
                    delete(AccountUseRow).where(AccountUseRow.used_at <= now - USE_WINDOW)
                )
                self._pruned_at = now
            return chosen.name

    async def cool_down(self, name: str, *, now: datetime) -> None:
        """An account-class failure: the account rests for its cooldown (from `now`)."""
        async with self._db.write() as session:
            row = await session.get(AccountRow, name)
            if row is None:
                return  # deleted meanwhile
            until = now + timedelta(seconds=row.cooldown_s)
            if row.cooldown_until is None or row.cooldown_until < until:
                row.cooldown_until = until
        logger.info("account %s cools down until %s", name, until.isoformat())

    # ------------------------------------------------------------------ node link

    async def storage_state(self, name: str) -> tuple[bytes, str]:
        """The decrypted storage state (b"" when none) and the proxy of an account."""
        async with self._db.read() as session:
            row = await session.get(AccountRow, name)
            if row is None:
                raise NotFound("account", name)
            token, proxy, sealed_proxy = row.storage_state, row.proxy, row.proxy_sealed
        if sealed_proxy is not None:
            proxy = self._secrets.decrypt(
                sealed_proxy, what=f"the proxy of account {name!r}"
            ).decode()
        if token is None:
            return b"", proxy
        return self._secrets.decrypt(token, what=f"the storage state of account {name!r}"), proxy

    async def put_storage_state(self, name: str, data: bytes) -> None:
        """Replace an account's storage state (a session's write-back); b"" removes it."""
        sealed = self._seal(name, data)
        async with self._db.write() as session:
            row = await session.get(AccountRow, name)
            if row is None:
                raise NotFound("account", name)
            row.storage_state = sealed
            row.updated_at = datetime.now(UTC)

    def _proxy_values(self, proxy: str) -> dict[str, Any]:
        """A proxy with a password is kept masked for the API and whole, encrypted, for nodes."""
        masked = mask_proxy(proxy)
        if masked == proxy:
            return {"proxy": proxy, "proxy_sealed": None}
        return {"proxy": masked, "proxy_sealed": self._secrets.encrypt(proxy.encode())}

    def _seal(self, name: str, data: bytes) -> bytes | None:
        if not data:
            return None
        check_storage_state(data)
        return self._secrets.encrypt(data)

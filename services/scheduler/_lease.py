"""The leader's lease: which scheduler of a database dispatches, and the token that fences it.

PostgreSQL: one row in `scheduler_lease`. A scheduler takes it when it has expired (in the
database's clock) and raises its token by one; the holder renews it well before it expires.
Every write transaction of a scheduler first checks, in the same transaction and under a share
lock of the row, that it still holds the lease under its token (`fence`): a deposed leader that
has not noticed yet (a long pause, a network cut) cannot claim, report or recover a single job,
and a taker's UPDATE of the row waits for the writes already under way to commit first.

SQLite: one scheduler only. It holds an exclusive lock on `<database>.lock` for as long as it
runs; a second scheduler on the same file refuses to start and says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import FailedPrecondition, Unavailable
from services.scheduler._db import Database
from services.scheduler._models import LeaseRow

logger = logging.getLogger(__name__)

LEASE_NAME = "leader"
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


class NotLeader(Unavailable):
    """This scheduler does not hold the lease (any more): it must not write."""


class Lease(Protocol):
    """What the leadership loop needs of a lease, on either database."""

    token: int | None
    # Where this scheduler serves, as clients should be told (set once it is bound).
    address: str

    async def acquire(self) -> bool: ...

    async def renew(self) -> bool: ...

    async def release(self) -> None: ...

    async def leader_address(self) -> str: ...


class PostgresLease:
    """The lease row (see the module's docstring); `holder` names this process uniquely."""

    def __init__(self, db: Database, *, holder: str, address: str, ttl: timedelta) -> None:
        self._db = db
        self.holder = holder
        self.address = address
        self._ttl = ttl
        self.token: int | None = None

    async def acquire(self) -> bool:
        """Take the lease if it has expired (a new term: the token grows). True when taken."""
        async with self._db.write(fenced=False) as session:
            await session.execute(
                self._db.insert_ignoring_conflicts(
                    LeaseRow.__table__,
                    [
                        {
                            "name": LEASE_NAME,
                            "holder": "",
                            "address": "",
                            "token": 0,
                            "expires_at": _NEVER,
                            "acquired_at": _NEVER,
                        }
                    ],
                )
            )
            token = await session.scalar(
                update(LeaseRow)
                .where(LeaseRow.name == LEASE_NAME, LeaseRow.expires_at < func.now())
                .values(
                    holder=self.holder,
                    address=self.address,
                    token=LeaseRow.token + 1,
                    expires_at=func.now() + self._ttl,
                    acquired_at=func.now(),
                )
                .returning(LeaseRow.token)
            )
        self.token = int(token) if token is not None else None
        return self.token is not None

    async def renew(self) -> bool:
        """Extend the lease; False when another scheduler holds it now (this one is deposed)."""
        if self.token is None:
            return False
        async with self._db.write(fenced=False) as session:
            renewed = await session.scalar(
                update(LeaseRow)
                .where(
                    LeaseRow.name == LEASE_NAME,
                    LeaseRow.holder == self.holder,
                    LeaseRow.token == self.token,
                )
                .values(expires_at=func.now() + self._ttl)
                .returning(LeaseRow.token)
            )
        if renewed is None:
            self.token = None
        return renewed is not None

    async def release(self) -> None:
        """Let the lease go at once (a clean stop): a standby need not wait for it to expire."""
        token, self.token = self.token, None
        if token is None:
            return
        async with self._db.write(fenced=False) as session:
            await session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == LEASE_NAME,
                    LeaseRow.holder == self.holder,
                    LeaseRow.token == token,
                )
                .values(expires_at=_NEVER)
            )

    async def leader_address(self) -> str:
        """Where the current leader serves; empty when no lease is held."""
        async with self._db.read() as session:
            address = await session.scalar(
                select(LeaseRow.address).where(
                    LeaseRow.name == LEASE_NAME, LeaseRow.expires_at > func.now()
                )
            )
        return address or ""

    async def fence(self, session: AsyncSession) -> None:
        """Refuse the transaction of `session` unless this scheduler leads under its token."""
        token = self.token
        held = None
        if token is not None:
            held = await session.scalar(
                select(LeaseRow.token)
                .where(
                    LeaseRow.name == LEASE_NAME,
                    LeaseRow.holder == self.holder,
                    LeaseRow.token == token,
                    LeaseRow.expires_at > func.now(),
                )
                .with_for_update(read=True)
            )
        if held is None:
            raise NotLeader(
                "this scheduler is not the leader (its lease expired or another took it); "
                "its writes are refused"
            )


class SqliteLease:
    """The one scheduler of a SQLite file: an exclusive lock on `<database>.lock`."""

    def __init__(self, database_url: str, *, address: str) -> None:
        database = make_url(database_url).database or ""
        self.path = Path(f"{database}.lock").resolve()
        self.address = address
        self.token: int | None = None
        self._file: IO[str] | None = None

    async def acquire(self) -> bool:
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FailedPrecondition(
                f"another scheduler ({holder}) already serves the SQLite database "
                f"{self.path.with_suffix('')}: SQLite runs one scheduler only; run several "
                "on PostgreSQL (postgresql+asyncpg://…)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle
        self.token = 1
        return True

    async def renew(self) -> bool:
        return self._file is not None

    async def release(self) -> None:
        handle, self._file = self._file, None
        self.token = None
        if handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()

    async def leader_address(self) -> str:
        return self.address if self._file is not None else ""


def make_lease(db: Database, *, holder: str, address: str, ttl: timedelta) -> Lease:
    """The lease for this database's dialect; on PostgreSQL it also fences every write of `db`."""
    if db.dialect == "sqlite":
        return SqliteLease(db.url, address=address)
    lease = PostgresLease(db, holder=holder, address=address, ttl=ttl)
    db.fence = lease.fence
    return lease

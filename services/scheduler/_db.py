"""The database: engines, SQLite tuning, and the only place that knows about dialects.

SQLite (the embedded default) gets WAL, a busy timeout and one writer connection whose
transactions start with BEGIN IMMEDIATE, so concurrent writers queue instead of failing with
"database is locked". PostgreSQL uses one pool for both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Insert, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from services.scheduler import _migrate
from services.scheduler._events import EventStream, pending

logger = logging.getLogger(__name__)


def _tune_sqlite(engine: AsyncEngine, *, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver so we choose the kind of transaction below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "busy_timeout=10000",
            "foreign_keys=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


class Database:
    """Sessions for reading and for writing; `write()` is one transaction, committed on exit.

    Events emitted into a write transaction (`_events.emit`) are published on `events` right
    after it commits, in commit order. With a `fence` (the leader's lease on PostgreSQL, see
    _lease.py) every write transaction checks it first and is refused when it fails.
    """

    def __init__(self, url: str, *, events: EventStream | None = None, echo: bool = False) -> None:
        parsed = make_url(url)
        self.events = events or EventStream()
        # Commit and publish of a transaction with events happen under this lock, so two
        # transactions' events are never published in the other order than they committed.
        self._commit_order = asyncio.Lock()
        self.dialect = parsed.get_backend_name()
        self.url = url
        self.fence: Callable[[AsyncSession], Awaitable[None]] | None = None
        if self.dialect == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise ValueError(
                    "use a SQLite file, not :memory: (each connection would get its own)"
                )
            self._writer = create_async_engine(url, echo=echo, pool_size=1, max_overflow=0)
            self._reader = create_async_engine(url, echo=echo, pool_size=4, max_overflow=4)
            _tune_sqlite(self._writer, begin="BEGIN IMMEDIATE")
            _tune_sqlite(self._reader, begin="BEGIN")
        else:
            self._writer = create_async_engine(url, echo=echo, pool_size=10, max_overflow=10)
            self._reader = self._writer
        self._write_sessions = async_sessionmaker(self._writer, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self._reader, expire_on_commit=False)

    async def ensure_schema(self, *, upgrade: bool) -> None:
        """Migrate to the code's schema when `upgrade`, else refuse a database not already at it.

        Raises _migrate.SchemaOutdated, whose message names the command that upgrades it.
        """
        if upgrade:
            await _migrate.upgrade(self.url)
        else:
            await _migrate.require_current(self.url)

    @asynccontextmanager
    async def write(self, *, fenced: bool = True) -> AsyncIterator[AsyncSession]:
        """One transaction; `fenced=False` only for the lease's own statements."""
        async with self._write_sessions() as session:
            transaction = await session.begin()
            try:
                if fenced and self.fence is not None:
                    await self.fence(session)
                yield session
            except BaseException:
                await transaction.rollback()
                pending(session)
                raise
            events = pending(session)
            if not events:
                await transaction.commit()
                return
            async with self._commit_order:
                await transaction.commit()
                self.events.publish(events)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session:
            yield session

    def insert_ignoring_conflicts(
        self, table: Any, rows: Sequence[dict[str, Any]] | None = None
    ) -> Insert:
        """INSERT … ON CONFLICT DO NOTHING for this dialect (idempotent ingestion).

        Without `rows`, execute it with a list of parameters: one statement compiled once
        (cached) for the whole batch, where a multi-row VALUES is compiled anew every time.
        """
        dialect_insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        statement = dialect_insert(table)
        if rows is not None:
            statement = statement.values(list(rows))
        return statement.on_conflict_do_nothing()

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()

"""Alembic's environment for the scheduler's database (SQLite via aiosqlite, PostgreSQL via asyncpg).

Smartfleet runs migrations through services/scheduler/_migrate.py, which hands over an open
connection inside its own transaction (`config.attributes["connection"]`). The `alembic` command
that authors revisions (configured by pyproject.toml's [tool.alembic]) has none: it makes an async
engine from `-x database_url=…` or SMARTFLEET_DATABASE_URL, the same URL the scheduler takes.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from services.scheduler._migrate import migration_options
from services.scheduler._models import Base


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("database_url") or os.environ.get(
        "SMARTFLEET_DATABASE_URL"
    )
    if not url:
        raise SystemExit(
            "which database? alembic -x database_url=sqlite+aiosqlite:///path/to.db … "
            "(or set SMARTFLEET_DATABASE_URL)"
        )
    return url


def _run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, **migration_options())
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_new_engine(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run_on)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=_database_url(),
        target_metadata=Base.metadata,
        literal_binds=True,
        **migration_options(),
    )
    with context.begin_transaction():
        context.run_migrations()
elif (given := context.config.attributes.get("connection")) is not None:
    _run_on(given)
else:
    asyncio.run(_run_on_new_engine(_database_url()))

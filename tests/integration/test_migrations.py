"""Schema migrations on SQLite and PostgreSQL: rows survive upgrades, databases made before
migrations are adopted, the models and the migrations agree, and the scheduler and smartctl use
them. Rows are written with the baseline's own tables (as the version that made them did)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from typer.testing import CliRunner

from cli.main import app
from services.common.config import SchedulerSettings
from services.common.nats_server import EmbeddedNatsServer
from services.scheduler import SchedulerService, _migrate
from services.scheduler._migrate import BASELINE, SchemaError, SchemaOutdated
from services.scheduler._models import Base
from tests.integration.baseline_rows import SEAL, STORAGE_STATE, sample_rows
from tests.integration.test_scheduler import database_url

__all__ = ["database_url"]  # fixtures used here

pytestmark = pytest.mark.timeout(120)

SCHEMA = _migrate.baseline_schema()


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(url, poolclass=sa.pool.NullPool)
    try:
        async with engine.begin() as connection:
            yield connection
    finally:
        await engine.dispose()


async def insert_rows(
    url: str, rows: dict[str, list[dict[str, Any]]], *, tables: sa.MetaData = SCHEMA
) -> None:
    async with connected(url) as connection:
        for table in tables.sorted_tables:
            if table.name in rows:
                await connection.execute(table.insert(), rows[table.name])


async def read_rows(url: str, *, tables: sa.MetaData = SCHEMA) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, in primary-key order, as plain dicts."""
    async with connected(url) as connection:
        found = {}
        for table in tables.sorted_tables:
            result = await connection.execute(
                sa.select(*table.columns).order_by(*table.primary_key.columns)
            )
            found[table.name] = [dict(row._mapping) for row in result]
        return found


def _utc(value: Any) -> Any:
    # SQLite hands DateTime(timezone=True) back naive (in UTC, as written); PostgreSQL aware.
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def assert_rows_written(found: dict[str, list[dict[str, Any]]], written: dict[str, Any]) -> None:
    for table, rows in written.items():
        assert len(found[table]) == len(rows), table
        for got, want in zip(found[table], rows, strict=True):
            for column, value in want.items():
                assert _utc(got[column]) == _utc(value), f"{table}.{column}"


def assert_same_rows(after: dict[str, Any], before: dict[str, Any]) -> None:
    assert after.keys() == before.keys()
    for table in before:
        assert len(after[table]) == len(before[table]), table
        for number, (got, had) in enumerate(zip(after[table], before[table], strict=True)):
            assert got == had, f"{table} row {number}"


async def create_all(url: str, metadata: sa.MetaData = SCHEMA) -> None:
    """What the scheduler did before migrations: create_all, no alembic_version."""
    async with connected(url) as connection:
        await connection.run_sync(metadata.create_all)


def without(table: sa.Table, column: str) -> sa.MetaData:
    """A MetaData holding `table` minus `column` (to write rows into an older file)."""
    metadata = sa.MetaData()
    sa.Table(
        table.name,
        metadata,
        *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in table.columns
            if c.name != column
        ),
    )
    return metadata


async def test_rows_made_at_the_baseline_survive_upgrading_to_head(database_url: str) -> None:
    """A baseline database with rows in every table upgrades to head with each row intact."""
    await _migrate.upgrade(database_url, revision=BASELINE)
    assert await _migrate.current(database_url) == BASELINE
    rows = sample_rows()
    await insert_rows(database_url, rows)
    before = await read_rows(database_url)
    assert_rows_written(before, rows)

    result = await _migrate.upgrade(database_url)

    assert (result.before, result.after, result.adopted) == (BASELINE, _migrate.head(), False)
    after = await read_rows(database_url)
    assert_same_rows(after, before)
    alice = next(row for row in after["accounts"] if row["name"] == "alice")
    assert SEAL.decrypt(alice["storage_state"]).decode() == STORAGE_STATE
    assert (await _migrate.status(database_url)).state == "current"


async def test_a_database_made_before_migrations_is_adopted(database_url: str) -> None:
    """A create_all database (no alembic_version) is stamped, not re-created, and keeps its rows."""
    await create_all(database_url)
    rows = sample_rows()
    await insert_rows(database_url, rows)
    before = await read_rows(database_url)
    assert (await _migrate.status(database_url)).state == "legacy"

    result = await _migrate.upgrade(database_url)

    assert (result.adopted, result.repairs, result.after) == (True, (), _migrate.head())
    assert_same_rows(await read_rows(database_url), before)
    assert await _migrate.differences(database_url) == []


async def test_an_old_file_without_results_stored_at_gets_the_column(database_url: str) -> None:
    """A pre-migration database lacking results.stored_at (it broke result inserts) is adopted
    with the column added, NULL in its old rows, every other value intact."""
    await create_all(database_url)
    async with connected(database_url) as connection:
        await connection.exec_driver_sql("ALTER TABLE results DROP COLUMN stored_at")
    old_results = without(SCHEMA.tables["results"], "stored_at")
    rows = sample_rows()
    for row in rows["results"]:
        del row["stored_at"]
    await insert_rows(database_url, {"results": rows["results"]}, tables=old_results)
    retried = {**sample_rows()["results"][0], "attempt": 2}
    with pytest.raises(sa.exc.DBAPIError, match="stored_at"):  # what today's code met there
        await insert_rows(database_url, {"results": [retried]})
    before = await read_rows(database_url, tables=old_results)

    result = await _migrate.upgrade(database_url)

    assert result.adopted and result.repairs == ("added results.stored_at",)
    assert_same_rows(await read_rows(database_url, tables=old_results), before)
    stored = await read_rows(database_url)
    assert [row["stored_at"] for row in stored["results"]] == [None, None]
    assert await _migrate.differences(database_url) == []
    await insert_rows(database_url, {"results": [retried]})


async def test_an_old_file_gets_the_tables_and_indexes_create_all_would_have_added(
    database_url: str,
) -> None:
    """A pre-migration database from before schedules (and one index) existed gets both."""
    await create_all(database_url)
    async with connected(database_url) as connection:
        await connection.exec_driver_sql("DROP TABLE schedules")
        await connection.exec_driver_sql("DROP INDEX ix_jobs_run_status")
    older = sa.MetaData()
    for table in SCHEMA.sorted_tables:
        if table.name != "schedules":
            table.to_metadata(older)
    await insert_rows(database_url, sample_rows(), tables=older)
    before = await read_rows(database_url, tables=older)

    result = await _migrate.upgrade(database_url)

    assert result.adopted
    assert set(result.repairs) == {"created table schedules", "created index ix_jobs_run_status"}
    assert_same_rows(await read_rows(database_url, tables=older), before)
    assert (await read_rows(database_url))["schedules"] == []
    assert await _migrate.differences(database_url) == []


async def test_a_pre_migration_database_that_cannot_be_filled_in_is_refused(
    database_url: str,
) -> None:
    """A legacy database missing a NOT NULL column is refused by name and left unchanged."""
    await create_all(database_url)
    async with connected(database_url) as connection:
        await connection.exec_driver_sql("ALTER TABLE runs DROP COLUMN dead")
        await connection.exec_driver_sql("ALTER TABLE results DROP COLUMN stored_at")

    with pytest.raises(SchemaError, match=r"runs\.dead") as refused:
        await _migrate.upgrade(database_url)

    assert "nothing was changed" in refused.value.message
    assert (await _migrate.status(database_url)).state == "legacy"
    async with connected(database_url) as connection:
        columns = await connection.run_sync(
            lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("results")}
        )
    assert "stored_at" not in columns


async def test_models_and_migrations_agree(database_url: str) -> None:
    """After `upgrade head` autogenerate finds no difference from the models (types compared):
    the check that fails when a model changes without a migration."""
    await _migrate.upgrade(database_url)
    assert await _migrate.differences(database_url) == []

    changed = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["jobs"].c.status.type = sa.String(40)
    found = await _migrate.differences(database_url, metadata=changed)
    assert [(d[0][0], d[0][2], d[0][3]) for d in found] == [("modify_type", "jobs", "status")]


async def test_scheduler_refuses_a_schema_not_at_head_unless_told_to_upgrade(
    database_url: str, nats_server: EmbeddedNatsServer
) -> None:
    """Without database_upgrade a scheduler refuses an empty, pre-migration or newer database,
    naming the command to run; with it, it upgrades and serves."""
    settings = SchedulerSettings(
        scheduler_listen="127.0.0.1:0", database_url=database_url, nats_url=nats_server.url
    )
    head = _migrate.head()

    async def refusal() -> str:
        service = SchedulerService(settings)
        try:
            with pytest.raises(SchemaOutdated) as refused:
                await service.start()
        finally:
            await service.stop()
        return refused.value.message

    empty = await refusal()
    assert "has no schema yet" in empty and f"expects revision {head}" in empty
    assert "run `smartctl db upgrade --database-url " in empty
    await create_all(database_url)
    legacy = await refusal()
    assert "made before schema migrations" in legacy and "smartctl db upgrade" in legacy

    upgrading = SchedulerService(settings.model_copy(update={"database_upgrade": True}))
    try:
        assert await upgrading.start()
        assert (await _migrate.status(database_url)).state == "current"
    finally:
        await upgrading.stop()

    async with connected(database_url) as connection:
        await connection.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dcafe'"))
    newer = await refusal()
    assert "f00dcafe" in newer and "does not know" in newer
    with pytest.raises(SchemaOutdated, match="does not know"):
        await _migrate.upgrade(database_url)


def test_the_scheduler_process_exits_with_one_line_naming_the_command(sqlite_url: str) -> None:
    """`smartctl scheduler serve` on an empty database exits 1 with one log line, no traceback."""
    serve = ["scheduler", "serve", "--database-url", sqlite_url, "--listen", "127.0.0.1:0"]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            *serve,
            "--nats-url",
            "nats://127.0.0.1:9",
            "--log-text",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert completed.returncode == 1
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "scheduler cannot start" in lines[0]
    assert f"smartctl db upgrade --database-url {sqlite_url}" in lines[0]


async def test_smartctl_db_upgrade_then_current_prints_the_head(database_url: str) -> None:
    """`smartctl db upgrade` then `smartctl db current` (table and -o json) show the head."""
    runner = CliRunner()
    head = _migrate.head()

    def smartctl(*args: str) -> str:
        # In a thread: the command runs its own event loop, as it does from a shell.
        result = runner.invoke(app, ["db", *args, "--database-url", database_url])
        assert result.exit_code == 0, result.output
        return result.output

    before = json.loads(await asyncio.to_thread(smartctl, "current", "-o", "json"))
    assert (before["current"], before["state"], before["head"]) == (None, "empty", head)
    upgraded = await asyncio.to_thread(smartctl, "upgrade")
    assert f"none → {head} (head)" in upgraded
    assert f"{head} (head, up to date)" in await asyncio.to_thread(smartctl, "current")
    after = json.loads(await asyncio.to_thread(smartctl, "current", "-o", "json"))
    assert (after["current"], after["up_to_date"]) == (head, True)
    assert "already up to date" in await asyncio.to_thread(smartctl, "upgrade")

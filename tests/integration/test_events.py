"""The scheduler's event stream: typed events for every transition, published in commit order."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from services.common.spec import validate_spec
from services.common.types import Cell, ErrorClass, Outcome, SessionResult
from services.scheduler._db import Database
from services.scheduler._events import (
    EventStream,
    JobDead,
    JobsDispatched,
    JobsReleased,
    ResultsStored,
    RunCancelled,
    RunCompleted,
    RunCreated,
    RunPaused,
    RunsProgressed,
    RunStarted,
    emit,
)
from services.scheduler._models import RunRow
from services.scheduler._runs import RunStore
from services.scheduler.jobs import Claim, JobStatus, JobStore
from tests.conftest import POSTGRES_URL, postgres_available


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield sqlite_url
        return
    if not postgres_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import asyncpg

    admin_dsn = POSTGRES_URL.replace("postgresql+asyncpg", "postgresql")
    name = f"sf_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


class Recorder:
    def __init__(self, stream: EventStream) -> None:
        self.events: list[Any] = []
        stream.subscribe(self.events.append)

    def kinds(self) -> list[str]:
        return [type(event).__name__ for event in self.events]


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[tuple[Database, RunStore, JobStore, Recorder]]:
    stream = EventStream()
    recorder = Recorder(stream)
    db = Database(database_url, events=stream)
    await db.ensure_schema(upgrade=True)
    runs = RunStore(db)
    try:
        yield db, runs, JobStore(db, runs, accounts=None), recorder
    finally:
        await db.close()


def _result(run_id: str, index: int, attempt: int, *, ok: bool) -> SessionResult:
    now = datetime.now(UTC)
    return SessionResult(
        job_id=f"{run_id}-{index}",
        attempt=attempt,
        run_id=run_id,
        index=index,
        outcome=Outcome.OK if ok else Outcome.TIMEOUT,
        error_class=ErrorClass.NONE if ok else ErrorClass.TRANSIENT,
        error="" if ok else "navigation timed out",
        started_at=now,
        finished_at=now,
        duration_ms=10.0,
        target_url="http://127.0.0.1:9/",
    )


async def test_a_run_lifecycle_emits_its_events_in_order(stores: Any) -> None:
    """Create, start, dispatch, one ok and one dead job: each transition's event, in order,
    carrying what a subscriber needs (the run's final counters, the dead job's error)."""
    _, runs, jobs, recorder = stores
    spec = validate_spec(
        {"targets": ["http://127.0.0.1:9/"], "sessions": 2, "retry": {"max_attempts": 1}},
        allowed_hosts=[],
    )
    run = await runs.create(spec, start=False)
    run = await runs.start(run.id)
    now = datetime.now(UTC)
    claims = [
        Claim(index=i, target_url="http://127.0.0.1:9/", cell=Cell(), pool="chromium")
        for i in range(2)
    ]
    assert await jobs.claim(run, claims, now=now, deadline=now + timedelta(minutes=1))
    recorder.events.clear()
    stored = await jobs.report([_result(run.id, 0, 1, ok=True), _result(run.id, 1, 1, ok=False)])
    assert all(s.new for s in stored)
    assert recorder.kinds() == [
        "JobDead",
        "ResultsStored",
        "JobsReleased",
        "RunsProgressed",
        "RunCompleted",
    ]
    dead, results, released, progressed, completed = recorder.events
    assert isinstance(dead, JobDead) and (dead.job_id, dead.error) == (
        f"{run.id}-1",
        "navigation timed out",
    )
    assert isinstance(results, ResultsStored) and len(results.results) == 2
    assert isinstance(released, JobsReleased) and released.by_run_pool == {(run.id, "chromium"): 2}
    assert isinstance(progressed, RunsProgressed) and progressed.run_ids == {run.id}
    assert isinstance(completed, RunCompleted)
    assert (completed.run.succeeded, completed.run.failed, completed.run.dead) == (1, 1, 1)
    assert completed.run.status == "completed"
    # A repeated report changes nothing and says nothing.
    recorder.events.clear()
    assert not any(s.new for s in await jobs.report([_result(run.id, 0, 1, ok=True)]))
    assert recorder.events == []


async def test_create_start_pause_cancel_events(stores: Any) -> None:
    """Run transitions each emit one event; a pause of a paused run emits none; cancel releases
    what was on the bus and says so."""
    _, runs, jobs, recorder = stores
    spec = validate_spec({"targets": ["http://127.0.0.1:9/"], "sessions": 5}, allowed_hosts=[])
    run = await runs.create(spec, start=True)
    now = datetime.now(UTC)
    claim = Claim(index=0, target_url="http://127.0.0.1:9/", cell=Cell(), pool="chromium")
    assert await jobs.claim(run, [claim], now=now, deadline=now + timedelta(minutes=1))
    await runs.pause(run.id)
    await runs.pause(run.id)
    cancelled = await jobs.cancel(run.id)
    assert recorder.kinds() == [
        "RunCreated",
        "RunStarted",
        "JobsDispatched",
        "RunsProgressed",
        "RunPaused",
        "JobsReleased",
        "RunCancelled",
    ]
    assert isinstance(recorder.events[0], RunCreated)
    assert isinstance(recorder.events[1], RunStarted)
    assert isinstance(recorder.events[2], JobsDispatched)
    assert recorder.events[2].by_pool == {"chromium": 1}
    assert isinstance(recorder.events[4], RunPaused)
    last = recorder.events[-1]
    assert isinstance(last, RunCancelled) and last.withdrawn == {"chromium": 1}
    assert last.run.cancelled == 5 and cancelled.status == "cancelled"
    listed = await jobs.list_jobs(run.id, statuses=[JobStatus.CANCELLED], limit=10)
    assert [job.index for job in listed] == [0]


async def test_rolled_back_transactions_publish_nothing(stores: Any) -> None:
    """Events queued in a transaction that fails are dropped with it."""
    db, _, _, recorder = stores
    with pytest.raises(RuntimeError):
        async with db.write() as session:
            emit(session, RunsProgressed(frozenset({"x"})))
            raise RuntimeError("boom")
    assert recorder.events == []


async def test_concurrent_transactions_publish_in_commit_order(stores: Any) -> None:
    """Forty writers racing on one row: the events arrive in the order the row's value says
    the transactions committed."""
    db, runs, _, recorder = stores
    spec = validate_spec({"targets": ["http://127.0.0.1:9/"], "sessions": 5}, allowed_hosts=[])
    run = await runs.create(spec, start=False)
    recorder.events.clear()

    async def bump() -> None:
        async with db.write() as session:
            value = await session.scalar(
                update(RunRow)
                .where(RunRow.id == run.id)
                .values(dispatched=RunRow.dispatched + 1)
                .returning(RunRow.dispatched)
            )
            await asyncio.sleep(0)
            emit(session, JobsDispatched(run.id, {"order": int(value or 0)}))

    await asyncio.gather(*(bump() for _ in range(40)))
    seen = [event.by_pool["order"] for event in recorder.events]
    assert seen == list(range(1, 41))

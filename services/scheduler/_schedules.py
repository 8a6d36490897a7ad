"""Schedules: a cron expression plus a run template; each tick creates and starts a run.

A tick fires exactly once, across restarts too. Firing is three steps:

1. claim (one transaction): the tick goes into `firing_tick`, with the time of the claim, and
   `next_fire_at` moves past now, so a late wake-up (the scheduler was down) fires one tick,
   the latest missed one, never a burst;
2. the run "<schedule>-<YYYYmmddTHHMM>" is created and started by the RunStore;
3. finish (one transaction): last_fire_at, last_run_id, runs_created, and the claim cleared.

A restart between 1 and 3 finds the claim and looks for a run of that name created since the
claim: it adopts the run when step 2 had happened, and creates it otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.spec import RunSpec, validate_spec
from services.scheduler._account_rules import check_name
from services.scheduler._cron import CronSchedule
from services.scheduler._db import Database
from services.scheduler._models import RunRow, ScheduleRow
from services.scheduler._runs import Run, RunStore

logger = logging.getLogger(__name__)

# The runner sleeps until the next tick, but re-reads at least this often (wall-clock changes).
MAX_SLEEP = timedelta(seconds=60)
ERROR_BACKOFF = timedelta(seconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    name: str
    cron: str
    timezone: str
    template: RunSpec
    paused: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_run_id: str
    runs_created: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: ScheduleRow) -> Schedule:
        return cls(
            name=row.name,
            cron=row.cron,
            timezone=row.timezone,
            template=RunSpec.model_validate(row.template),
            paused=row.paused,
            next_fire_at=row.next_fire_at,
            last_fire_at=row.last_fire_at,
            last_run_id=row.last_run_id,
            runs_created=row.runs_created,
            created_at=row.created_at,
        )


def validate_template(data: dict[str, Any], *, allowed_hosts: list[str]) -> RunSpec:
    """validate_spec with field paths under `schedule.template`."""
    try:
        return validate_spec(data, allowed_hosts=allowed_hosts)
    except InvalidArgument as error:
        field = "schedule.template" + error.field.removeprefix("spec")
        raise InvalidArgument(field, error.reason) from None


def run_name(schedule: str, cron: CronSchedule, tick: datetime) -> str:
    return f"{schedule}-{cron.stamp(tick)}"


class ScheduleStore:
    def __init__(self, db: Database, *, allowed_hosts: list[str]) -> None:
        self._db = db
        self._allowed_hosts = list(allowed_hosts)
        # Set whenever a schedule changes: the runner wakes to look at the next tick again.
        self.changed = asyncio.Event()

    def _changed(self) -> None:
        self.changed.set()

    async def create(
        self, name: str, *, cron: str, timezone: str, template: dict[str, Any], paused: bool
    ) -> Schedule:
        now = datetime.now(UTC)
        check_name(name, field="schedule.name")
        schedule = CronSchedule.parse(cron, timezone, now=now)
        spec = validate_template(template, allowed_hosts=self._allowed_hosts)
        row = ScheduleRow(
            name=name,
            cron=schedule.expression,
            timezone=schedule.timezone,
            template=spec.to_json(),
            paused=paused,
            next_fire_at=None if paused else schedule.next_after(now),
            last_fire_at=None,
            last_run_id="",
            runs_created=0,
            firing_tick=None,
            firing_since=None,
            created_at=now,
            updated_at=now,
        )
        async with self._db.write() as session:
            if await session.get(ScheduleRow, name) is not None:
                raise AlreadyExists("schedule", name)
            session.add(row)
        logger.info("schedule %s created (%s %s)", name, row.cron, row.timezone)
        self._changed()
        return Schedule.from_row(row)

    async def get(self, name: str) -> Schedule:
        async with self._db.read() as session:
            row = await session.get(ScheduleRow, name)
            if row is None:
                raise NotFound("schedule", name)
            return Schedule.from_row(row)

    async def list_schedules(self) -> list[Schedule]:
        async with self._db.read() as session:
            rows = await session.scalars(select(ScheduleRow).order_by(ScheduleRow.name))
            return [Schedule.from_row(row) for row in rows]

    async def set_paused(self, name: str, *, paused: bool) -> Schedule:
        """Pause (no next tick) or resume (the next tick after now; missed ones are skipped)."""
        now = datetime.now(UTC)
        async with self._db.write() as session:
            row = await session.get(ScheduleRow, name)
            if row is None:
                raise NotFound("schedule", name)
            if row.paused != paused:
                row.paused = paused
                cron = CronSchedule(row.cron, row.timezone)
                row.next_fire_at = None if paused else cron.next_after(now)
                row.updated_at = now
        logger.info("schedule %s %s", name, "paused" if paused else "resumed")
        self._changed()
        return Schedule.from_row(row)

    async def delete(self, name: str) -> None:
        async with self._db.write() as session:
            deleted = await session.execute(
                delete(ScheduleRow).where(ScheduleRow.name == name).returning(ScheduleRow.name)
            )
            if deleted.first() is None:
                raise NotFound("schedule", name)
        logger.info("schedule %s deleted", name)
        self._changed()

    # ------------------------------------------------------------------ for the runner

    async def next_fire_at(self) -> datetime | None:
        """The earliest next tick of any active schedule."""
        async with self._db.read() as session:
            return await session.scalar(
                select(func.min(ScheduleRow.next_fire_at)).where(ScheduleRow.paused.is_(False))
            )

    async def claim_due(self, now: datetime) -> None:
        """Step 1 for every due schedule: note the tick to fire and move next_fire_at on."""
        async with self._db.write() as session:
            statement = select(ScheduleRow).where(
                ScheduleRow.paused.is_(False),
                ScheduleRow.firing_tick.is_(None),
                ScheduleRow.next_fire_at <= now,
            )
            if self._db.dialect == "postgresql":
                statement = statement.with_for_update()
            for row in await session.scalars(statement):
                cron = CronSchedule(row.cron, row.timezone)
                assert row.next_fire_at is not None
                row.firing_tick = max(row.next_fire_at, cron.latest_at_or_before(now))
                row.firing_since = datetime.now(UTC)
                row.next_fire_at = cron.next_after(now)

    async def claimed(self) -> list[ScheduleRow]:
        async with self._db.read() as session:
            return list(
                await session.scalars(
                    select(ScheduleRow)
                    .where(ScheduleRow.firing_tick.is_not(None))
                    .order_by(ScheduleRow.firing_tick)
                )
            )

    async def run_of_claim(self, row: ScheduleRow, name: str) -> str | None:
        """The run a claimed tick created before a crash, if it got that far."""
        assert row.firing_since is not None
        async with self._db.read() as session:
            return await session.scalar(
                select(RunRow.id)
                .where(
                    RunRow.name == name,
                    RunRow.created_at >= row.firing_since,
                    RunRow.id != row.last_run_id,
                )
                .order_by(RunRow.created_at)
                .limit(1)
            )

    async def finish(self, name: str, tick: datetime, run_id: str | None) -> None:
        """Step 3: record the fired tick and release the claim (only if still ours)."""
        values: dict[str, Any] = {"firing_tick": None, "firing_since": None, "last_fire_at": tick}
        if run_id is not None:
            values.update(last_run_id=run_id, runs_created=ScheduleRow.runs_created + 1)
        async with self._db.write() as session:
            await session.execute(
                update(ScheduleRow)
                .where(ScheduleRow.name == name, ScheduleRow.firing_tick == tick)
                .values(**values)
            )

    def template_for(self, row: ScheduleRow, name: str) -> RunSpec | None:
        """The template for a run named `name`, re-checked against today's allowlist."""
        try:
            spec = validate_template(row.template, allowed_hosts=self._allowed_hosts)
        except InvalidArgument as error:
            logger.warning(
                "schedule %s skipped a tick: its template is refused now: %s", row.name, error
            )
            return None
        return spec.model_copy(update={"name": name})


class ScheduleRunner:
    """Fires due ticks; sleeps until the earliest next tick or until a schedule changes."""

    def __init__(
        self,
        store: ScheduleStore,
        runs: RunStore,
        *,
        on_run: Callable[[Run], object] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._runs = runs
        self._on_run = on_run
        self._clock = clock
        self._wake = store.changed
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="schedule-runner")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def fire_due(self) -> list[str]:
        """Claim what is due, then finish every claim (this one's, or one a crash left)."""
        await self._store.claim_due(self._clock())
        fired = []
        for row in await self._store.claimed():
            assert row.firing_tick is not None
            cron = CronSchedule(row.cron, row.timezone)
            name = run_name(row.name, cron, row.firing_tick)
            run_id = await self._store.run_of_claim(row, name)
            if run_id is None:
                spec = self._store.template_for(row, name)
                if spec is not None:
                    run = await self._runs.create(spec, start=True)
                    run_id = run.id
                    logger.info("schedule %s fired: run %s (%s)", row.name, run.id, name)
                    if self._on_run is not None:
                        self._on_run(run)
            await self._store.finish(row.name, row.firing_tick, run_id)
            if run_id is not None:
                fired.append(run_id)
        return fired

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.fire_due()
                next_at = await self._store.next_fire_at()
                wait = MAX_SLEEP if next_at is None else next_at - self._clock()
            except Exception:
                logger.exception("firing schedules failed; trying again")
                wait = ERROR_BACKOFF
            # A few ms past the tick, so the wake-up does not land just before it.
            seconds = min(max(wait.total_seconds() + 0.002, 0.005), MAX_SLEEP.total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=seconds)

"""Schedules over the real Scheduler API, on SQLite and PostgreSQL, with real NATS."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from services.common.spec import RunSpec
from services.scheduler import SchedulerService
from services.scheduler._cron import CronSchedule
from services.scheduler._schedules import ScheduleRunner, run_name
from smartfleet.v1 import fleet_service_pb2_grpc, runs_pb2, schedules_pb2
from tests.integration.test_scheduler import channel, database_url, scheduler

__all__ = ["channel", "database_url", "scheduler"]  # fixtures used here
pytestmark = pytest.mark.timeout(60)

TEMPLATE = runs_pb2.RunSpec(targets=["http://127.0.0.1:9/"], sessions=1)


async def create(
    api: fleet_service_pb2_grpc.FleetServiceStub,
    name: str,
    cron: str,
    *,
    timezone: str = "",
    template: runs_pb2.RunSpec = TEMPLATE,
) -> schedules_pb2.Schedule:
    schedule = schedules_pb2.Schedule(name=name, cron=cron, timezone=timezone, template=template)
    return (
        await api.CreateSchedule(schedules_pb2.CreateScheduleRequest(schedule=schedule), timeout=5)
    ).schedule


async def get(api: fleet_service_pb2_grpc.FleetServiceStub, name: str) -> schedules_pb2.Schedule:
    return (await api.GetSchedule(schedules_pb2.GetScheduleRequest(name=name), timeout=5)).schedule


async def wait_for_runs(
    api: fleet_service_pb2_grpc.FleetServiceStub, name: str, count: int
) -> schedules_pb2.Schedule:
    for _ in range(100):
        schedule = await get(api, name)
        if schedule.runs_created >= count:
            return schedule
        await asyncio.sleep(0.05)
    raise AssertionError(f"schedule {name} created {schedule.runs_created} runs, not {count}")


async def test_every_second_schedule_fires_twice_with_started_runs(
    channel: grpc.aio.Channel,
) -> None:
    """A six-field cron firing every second creates two started runs named after their tick."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    created = await create(api, "tick", "* * * * * *", timezone="Europe/Berlin")
    assert created.next_fire_at.seconds > 0 and created.runs_created == 0
    schedule = await wait_for_runs(api, "tick", 2)
    runs = [
        run
        for run in (await api.ListRuns(runs_pb2.ListRunsRequest(), timeout=5)).runs
        if run.name.startswith("tick-")
    ]
    # It keeps firing meanwhile: the listing sits between two readings of the counter.
    assert schedule.runs_created <= len(runs) <= (await get(api, "tick")).runs_created
    assert all(run.status == runs_pb2.RUN_STATUS_RUNNING for run in runs)
    assert schedule.last_run_id in {run.id for run in runs}
    last = schedule.last_fire_at.ToDatetime(tzinfo=UTC)
    stamp = last.astimezone(CronSchedule("* * * * * *", "Europe/Berlin").zone)
    assert f"tick-{stamp:%Y%m%dT%H%M}" in {run.name for run in runs}
    assert schedule.next_fire_at.ToDatetime(tzinfo=UTC) > last
    # The template is kept as given.
    assert list(schedule.template.targets) == ["http://127.0.0.1:9/"]


async def test_pause_stops_firing_and_resume_fires_again(channel: grpc.aio.Channel) -> None:
    """A paused schedule creates no runs and has no next tick; resumed, it fires again."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    await create(api, "pausable", "* * * * * *")
    await wait_for_runs(api, "pausable", 1)
    paused = (
        await api.SetSchedulePaused(
            schedules_pb2.SetSchedulePausedRequest(name="pausable", paused=True), timeout=5
        )
    ).schedule
    assert paused.paused and not paused.HasField("next_fire_at")
    await asyncio.sleep(0.2)  # a tick claimed just before the pause still completes
    settled = (await get(api, "pausable")).runs_created
    await asyncio.sleep(1.3)
    assert (await get(api, "pausable")).runs_created == settled
    resumed = (
        await api.SetSchedulePaused(
            schedules_pb2.SetSchedulePausedRequest(name="pausable", paused=False), timeout=5
        )
    ).schedule
    assert not resumed.paused and resumed.HasField("next_fire_at")
    await wait_for_runs(api, "pausable", settled + 1)


async def test_ticks_fire_once_across_restarts_and_crashes(
    scheduler: SchedulerService, channel: grpc.aio.Channel
) -> None:
    """A fired tick is not fired again by a restarted runner; a long outage fires one tick;
    a crash after the claim (before or after creating the run) ends with exactly one run."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    await scheduler.schedule_runner.stop()  # runners below play the scheduler, on a set clock
    created = await create(api, "hourly", "0 * * * *")
    tick = created.next_fire_at.ToDatetime(tzinfo=UTC)
    clock = tick + timedelta(seconds=1)

    def runner() -> ScheduleRunner:
        return ScheduleRunner(scheduler.schedules, scheduler.runs, clock=lambda: clock)

    first = await runner().fire_due()
    assert len(first) == 1
    assert await runner().fire_due() == []  # restarted: the tick is done
    schedule = await get(api, "hourly")
    assert schedule.runs_created == 1 and schedule.last_run_id == first[0]
    assert schedule.next_fire_at.ToDatetime(tzinfo=UTC) == tick + timedelta(hours=1)

    # Down for two days: one run, for the latest missed tick, and no burst.
    clock = tick + timedelta(days=2, minutes=30)
    assert len(await runner().fire_due()) == 1
    schedule = await get(api, "hourly")
    assert schedule.runs_created == 2
    assert schedule.last_fire_at.ToDatetime(tzinfo=UTC) == tick + timedelta(days=2)
    assert await runner().fire_due() == []

    # Crash after the claim and after the run was created: the restart adopts that run.
    clock = tick + timedelta(days=2, hours=1, seconds=5)
    await scheduler.schedules.claim_due(clock)
    [claim] = await scheduler.schedules.claimed()
    assert claim.firing_tick is not None
    name = run_name("hourly", CronSchedule("0 * * * *", "UTC"), claim.firing_tick)
    orphan = await scheduler.runs.create(
        RunSpec.model_validate({"targets": ["http://127.0.0.1:9/"], "sessions": 1, "name": name}),
        start=True,
    )
    assert await runner().fire_due() == [orphan.id]
    schedule = await get(api, "hourly")
    assert (schedule.runs_created, schedule.last_run_id) == (3, orphan.id)

    # Crash after the claim, before the run: the restart creates it, once.
    clock = tick + timedelta(days=2, hours=2, seconds=5)
    await scheduler.schedules.claim_due(clock)
    assert len(await runner().fire_due()) == 1
    assert await runner().fire_due() == []
    schedule = await get(api, "hourly")
    assert schedule.runs_created == 4
    named = [
        run
        for run in (await api.ListRuns(runs_pb2.ListRunsRequest(), timeout=5)).runs
        if run.name.startswith("hourly-")
    ]
    assert len(named) == 4 and len({run.name for run in named}) == 4


async def test_invalid_schedules_are_refused_naming_the_field(channel: grpc.aio.Channel) -> None:
    """Bad cron, time zone, template or name is INVALID_ARGUMENT; a second one of a name exists."""
    api = fleet_service_pb2_grpc.FleetServiceStub(channel)
    cases = [
        ("schedule.cron", {"cron": "61 * * * *"}),
        ("schedule.cron", {"cron": "* * *"}),
        ("schedule.cron", {"cron": "0 0 30 2 *"}),
        ("schedule.cron", {"cron": ""}),
        ("schedule.timezone", {"timezone": "Mars/Olympus"}),
        ("schedule.name", {"name": "no spaces allowed"}),
        (
            "schedule.template.targets[0]",
            {"template": runs_pb2.RunSpec(targets=["file:///etc/passwd"], sessions=1)},
        ),
        (
            "schedule.template.targets[0]",
            {"template": runs_pb2.RunSpec(targets=["http://example.com/"], sessions=1)},
        ),
        (
            "schedule.template.sessions",
            {"template": runs_pb2.RunSpec(targets=["http://127.0.0.1/"], sessions=-1)},
        ),
    ]
    for field, fields in cases:
        given: dict[str, object] = {"name": "s", "cron": "*/5 * * * *", "template": TEMPLATE}
        given.update(fields)
        request = schedules_pb2.CreateScheduleRequest(
            schedule=schedules_pb2.Schedule(**given)  # type: ignore[arg-type]
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await api.CreateSchedule(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert (caught.value.details() or "").startswith(field), (field, caught.value.details())
    await create(api, "s", "@daily", timezone="Europe/Berlin")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(api, "s", "@daily")
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = await api.ListSchedules(schedules_pb2.ListSchedulesRequest(), timeout=5)
    assert [(s.name, s.cron, s.timezone) for s in listed.schedules] == [
        ("s", "@daily", "Europe/Berlin")
    ]
    await api.DeleteSchedule(schedules_pb2.DeleteScheduleRequest(name="s"), timeout=5)
    calls = (
        (api.GetSchedule, schedules_pb2.GetScheduleRequest),
        (api.DeleteSchedule, schedules_pb2.DeleteScheduleRequest),
    )
    for call, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request(name="s"), timeout=5)  # type: ignore[operator]
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_runner_sleeps_until_the_next_tick(scheduler: SchedulerService) -> None:
    """With only a daily schedule, the runner is idle, not polling; a change wakes it at once."""
    fired: list[str] = []
    await scheduler.schedule_runner.stop()
    runner = ScheduleRunner(
        scheduler.schedules, scheduler.runs, on_run=lambda run: fired.append(run.id)
    )
    await runner.start()
    calls = 0
    original = scheduler.schedules.claim_due

    async def counting(now: datetime) -> None:
        nonlocal calls
        calls += 1
        await original(now)

    scheduler.schedules.claim_due = counting  # type: ignore[method-assign]
    try:
        await scheduler.schedules.create(
            "daily", cron="@daily", timezone="UTC", template=TEMPLATE_DATA, paused=False
        )
        await asyncio.sleep(0.3)
        woken = calls
        await asyncio.sleep(1.0)
        assert woken >= 1 and calls == woken  # woken by the change, then asleep
        await scheduler.schedules.create(
            "now", cron="* * * * * *", timezone="UTC", template=TEMPLATE_DATA, paused=False
        )
        for _ in range(60):
            if fired:
                break
            await asyncio.sleep(0.05)
        assert fired
    finally:
        await runner.stop()


TEMPLATE_DATA = {"targets": ["http://127.0.0.1:9/"], "sessions": 1}

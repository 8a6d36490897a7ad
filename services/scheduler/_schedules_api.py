"""Schedule RPCs of the Scheduler API."""

from __future__ import annotations

import grpc

from services.common.contracts import spec_data_from_pb
from services.common.errors import InvalidArgument
from services.scheduler._convert_accounts import schedule_to_pb
from services.scheduler._schedules import ScheduleStore
from smartfleet.v1 import accounts_pb2


def _required_name(value: str, field: str) -> str:
    if not value or len(value) > 128:
        raise InvalidArgument(field, "is required (at most 128 characters)")
    return value


class SchedulesApi:
    def __init__(self, *, schedules: ScheduleStore) -> None:
        self._schedules = schedules

    async def CreateSchedule(
        self, request: accounts_pb2.CreateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Schedule:
        given = request.schedule
        schedule = await self._schedules.create(
            _required_name(given.name, "schedule.name"),
            cron=given.cron,
            timezone=given.timezone or "UTC",
            template=spec_data_from_pb(given.template),
            paused=given.paused,
        )
        return schedule_to_pb(schedule)

    async def GetSchedule(
        self, request: accounts_pb2.ScheduleRef, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Schedule:
        return schedule_to_pb(await self._schedules.get(_required_name(request.name, "name")))

    async def ListSchedules(
        self, request: accounts_pb2.ListSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.ListSchedulesResponse:
        schedules = await self._schedules.list_schedules()
        return accounts_pb2.ListSchedulesResponse(
            schedules=[schedule_to_pb(schedule) for schedule in schedules]
        )

    async def SetSchedulePaused(
        self, request: accounts_pb2.SetSchedulePausedRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Schedule:
        schedule = await self._schedules.set_paused(
            _required_name(request.name, "name"), paused=request.paused
        )
        return schedule_to_pb(schedule)

    async def DeleteSchedule(
        self, request: accounts_pb2.ScheduleRef, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.DeleteScheduleResponse:
        await self._schedules.delete(_required_name(request.name, "name"))
        return accounts_pb2.DeleteScheduleResponse()

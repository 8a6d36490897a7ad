"""Schedule RPCs of the Scheduler API."""

from __future__ import annotations

import grpc

from services.common.contracts import spec_data_from_pb
from services.common.errors import InvalidArgument
from services.scheduler._convert_accounts import schedule_to_pb
from services.scheduler._paging import page_by_name
from services.scheduler._schedules import ScheduleStore
from smartfleet.v1 import schedules_pb2


def _required_name(value: str, field: str) -> str:
    if not value or len(value) > 128:
        raise InvalidArgument(field, "is required (at most 128 characters)")
    return value


class SchedulesApi:
    def __init__(self, *, schedules: ScheduleStore) -> None:
        self._schedules = schedules

    async def CreateSchedule(
        self, request: schedules_pb2.CreateScheduleRequest, context: grpc.aio.ServicerContext
    ) -> schedules_pb2.CreateScheduleResponse:
        given = request.schedule
        schedule = await self._schedules.create(
            _required_name(given.name, "schedule.name"),
            cron=given.cron,
            timezone=given.timezone or "UTC",
            template=spec_data_from_pb(given.template),
            paused=given.paused,
        )
        return schedules_pb2.CreateScheduleResponse(schedule=schedule_to_pb(schedule))

    async def GetSchedule(
        self, request: schedules_pb2.GetScheduleRequest, context: grpc.aio.ServicerContext
    ) -> schedules_pb2.GetScheduleResponse:
        schedule = await self._schedules.get(_required_name(request.name, "name"))
        return schedules_pb2.GetScheduleResponse(schedule=schedule_to_pb(schedule))

    async def ListSchedules(
        self, request: schedules_pb2.ListSchedulesRequest, context: grpc.aio.ServicerContext
    ) -> schedules_pb2.ListSchedulesResponse:
        page, token = page_by_name(
            await self._schedules.list_schedules(),
            lambda schedule: schedule.name,
            listing="schedules",
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return schedules_pb2.ListSchedulesResponse(
            schedules=[schedule_to_pb(schedule) for schedule in page], next_page_token=token
        )

    async def SetSchedulePaused(
        self, request: schedules_pb2.SetSchedulePausedRequest, context: grpc.aio.ServicerContext
    ) -> schedules_pb2.SetSchedulePausedResponse:
        schedule = await self._schedules.set_paused(
            _required_name(request.name, "name"), paused=request.paused
        )
        return schedules_pb2.SetSchedulePausedResponse(schedule=schedule_to_pb(schedule))

    async def DeleteSchedule(
        self, request: schedules_pb2.DeleteScheduleRequest, context: grpc.aio.ServicerContext
    ) -> schedules_pb2.DeleteScheduleResponse:
        await self._schedules.delete(_required_name(request.name, "name"))
        return schedules_pb2.DeleteScheduleResponse()

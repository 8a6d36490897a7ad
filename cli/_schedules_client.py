"""Fleet API calls for schedules (a FleetClient with the schedule RPCs)."""

from __future__ import annotations

import typer

from cli._client import FleetClient
from cli._context import connection_for
from smartfleet.v1 import schedules_pb2


class SchedulesClient(FleetClient):
    def __enter__(self) -> SchedulesClient:
        return self

    def create_schedule(self, schedule: schedules_pb2.Schedule) -> schedules_pb2.Schedule:
        request = schedules_pb2.CreateScheduleRequest(schedule=schedule)
        return self._unary(self._stub.CreateSchedule, request).schedule

    def get_schedule(self, name: str) -> schedules_pb2.Schedule:
        request = schedules_pb2.GetScheduleRequest(name=name)
        return self._unary(self._stub.GetSchedule, request).schedule

    def list_schedules(self) -> list[schedules_pb2.Schedule]:
        response = self._unary(self._stub.ListSchedules, schedules_pb2.ListSchedulesRequest())
        return list(response.schedules)

    def set_paused(self, name: str, *, paused: bool) -> schedules_pb2.Schedule:
        request = schedules_pb2.SetSchedulePausedRequest(name=name, paused=paused)
        return self._unary(self._stub.SetSchedulePaused, request).schedule

    def delete_schedule(self, name: str) -> None:
        self._unary(self._stub.DeleteSchedule, schedules_pb2.DeleteScheduleRequest(name=name))


def open_schedules_client(ctx: typer.Context) -> SchedulesClient:
    return SchedulesClient(connection_for(ctx))

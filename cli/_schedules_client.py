"""Fleet API calls for schedules (a FleetClient with the schedule RPCs)."""

from __future__ import annotations

import typer

from cli._client import FleetClient
from cli._context import connection_for
from smartfleet.v1 import accounts_pb2


class SchedulesClient(FleetClient):
    def __enter__(self) -> SchedulesClient:
        return self

    def create_schedule(self, schedule: accounts_pb2.Schedule) -> accounts_pb2.Schedule:
        request = accounts_pb2.CreateScheduleRequest(schedule=schedule)
        return self._unary(self._stub.CreateSchedule, request)

    def get_schedule(self, name: str) -> accounts_pb2.Schedule:
        return self._unary(self._stub.GetSchedule, accounts_pb2.ScheduleRef(name=name))

    def list_schedules(self) -> list[accounts_pb2.Schedule]:
        response = self._unary(self._stub.ListSchedules, accounts_pb2.ListSchedulesRequest())
        return list(response.schedules)

    def set_paused(self, name: str, *, paused: bool) -> accounts_pb2.Schedule:
        request = accounts_pb2.SetSchedulePausedRequest(name=name, paused=paused)
        return self._unary(self._stub.SetSchedulePaused, request)

    def delete_schedule(self, name: str) -> None:
        self._unary(self._stub.DeleteSchedule, accounts_pb2.ScheduleRef(name=name))


def open_schedules_client(ctx: typer.Context) -> SchedulesClient:
    return SchedulesClient(connection_for(ctx))

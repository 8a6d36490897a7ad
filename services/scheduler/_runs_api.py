"""Run RPCs of the scheduler's internal API: lifecycle, reads, jobs, results, progress."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import grpc

from services.common.contracts import result_from_row, result_to_pb, spec_data_from_pb
from services.common.errors import InvalidArgument
from services.common.spec import validate_spec
from services.scheduler import _convert as convert
from services.scheduler._progress import RunProgressHub
from services.scheduler._runs import RunStore
from services.scheduler._stats import ResultStore
from services.scheduler.jobs import JobStatus, JobStore
from smartfleet.v1 import results_pb2, runs_pb2

logger = logging.getLogger(__name__)

DEFAULT_PAGE = 500
MAX_PAGE = 5000


def require_id(value: str, field: str) -> str:
    if not value or len(value) > 128:
        raise InvalidArgument(field, "is required (at most 128 characters)")
    return value


class RunsApi:
    def __init__(
        self,
        *,
        runs: RunStore,
        jobs: JobStore,
        results: ResultStore,
        hub: RunProgressHub,
        allowed_hosts: Sequence[str],
    ) -> None:
        self._runs = runs
        self._jobs = jobs
        self._results = results
        self._hub = hub
        self._allowed_hosts = list(allowed_hosts)

    async def CreateRun(
        self, request: runs_pb2.CreateRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        spec = validate_spec(spec_data_from_pb(request.spec), allowed_hosts=self._allowed_hosts)
        run = await self._runs.create(spec, start=request.start)
        logger.info(
            "run %s created (%d sessions, started=%s)", run.id, spec.sessions, request.start
        )
        return run.to_pb()

    async def StartRun(
        self, request: runs_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        run = await self._runs.start(require_id(request.run_id, "run_id"))
        if request.now:
            run = await self._runs.expedite(run.id)
        return run.to_pb()

    async def PauseRun(
        self, request: runs_pb2.RunRef, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return (await self._runs.pause(require_id(request.run_id, "run_id"))).to_pb()

    async def ResumeRun(
        self, request: runs_pb2.RunRef, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return (await self._runs.resume(require_id(request.run_id, "run_id"))).to_pb()

    async def ExpediteRun(
        self, request: runs_pb2.RunRef, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return (await self._runs.expedite(require_id(request.run_id, "run_id"))).to_pb()

    async def CancelRun(
        self, request: runs_pb2.RunRef, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return (await self._jobs.cancel(require_id(request.run_id, "run_id"))).to_pb()

    async def GetRun(
        self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.Run:
        return (await self._runs.get(require_id(request.run_id, "run_id"))).to_pb()

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        if request.limit < 0:
            raise InvalidArgument("limit", "must be >= 0")
        runs = await self._runs.list_runs(limit=min(request.limit or 50, 1000))
        return runs_pb2.ListRunsResponse(runs=[run.to_pb() for run in runs])

    async def GetRunStats(
        self, request: runs_pb2.GetRunStatsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.RunStats:
        stats = await self._results.stats(require_id(request.run_id, "run_id"))
        return convert.stats_to_pb(stats)

    async def ListResults(
        self, request: results_pb2.ListResultsRequest, context: grpc.aio.ServicerContext
    ) -> results_pb2.ListResultsResponse:
        if request.limit < 0 or request.limit > MAX_PAGE:
            raise InvalidArgument("limit", f"must be between 0 and {MAX_PAGE}")
        rows, next_after = await self._results.results(
            require_id(request.run_id, "run_id"),
            after=request.after,
            limit=request.limit or DEFAULT_PAGE,
        )
        return results_pb2.ListResultsResponse(
            results=[result_to_pb(result_from_row(row)) for row in rows], next_after=next_after
        )

    async def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.Run]:
        async for run in self._hub.watch(require_id(request.run_id, "run_id")):
            yield run.to_pb()

    async def ListJobs(
        self, request: runs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListJobsResponse:
        if request.limit < 0 or request.limit > MAX_PAGE:
            raise InvalidArgument("limit", f"must be between 0 and {MAX_PAGE}")
        try:
            status = JobStatus(request.status) if request.status else None
        except ValueError:
            raise InvalidArgument(
                "status", f"must be one of {', '.join(s.value for s in JobStatus)}"
            ) from None
        jobs = await self._jobs.list_jobs(
            require_id(request.run_id, "run_id"),
            status=status,
            limit=request.limit or DEFAULT_PAGE,
        )
        return runs_pb2.ListJobsResponse(jobs=[convert.job_to_pb(job) for job in jobs])

"""Run RPCs of FleetService, as the scheduler serves them: lifecycle, reads, jobs, results."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

import grpc

from services.common.allowlist import host_allowed
from services.common.contracts import (
    duration,
    result_from_row,
    result_to_pb,
    spec_data_from_pb,
)
from services.common.errors import InvalidArgument
from services.common.spec import RunSpec, parse_spec, validate_spec
from services.scheduler import _convert as convert
from services.scheduler import _paging as paging
from services.scheduler._plan_summary import summarize_plan
from services.scheduler._progress import RunProgressHub
from services.scheduler._run import Run, RunStatus
from services.scheduler._runs import RunStore
from services.scheduler._stats import ResultStore
from services.scheduler.jobs import JobStore
from smartfleet.v1 import results_pb2, runs_pb2

logger = logging.getLogger(__name__)

MAX_LABELS = 32
# The timeline of a validate_only plan has at most this many buckets.
MAX_PLAN_BUCKETS = 240
MAX_LABEL_LENGTH = 63


def require_id(value: str, field: str) -> str:
    if not value or len(value) > 128:
        raise InvalidArgument(field, "is required (at most 128 characters)")
    return value


def check_labels(labels: dict[str, str], field: str) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(field, f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not key or len(key) > MAX_LABEL_LENGTH or len(value) > MAX_LABEL_LENGTH:
            raise InvalidArgument(
                f"{field}[{key[:MAX_LABEL_LENGTH]!r}]",
                f"keys are 1 to {MAX_LABEL_LENGTH} characters, values at most {MAX_LABEL_LENGTH}",
            )
    return labels


class RunsApi:
    def __init__(
        self,
        *,
        runs: RunStore,
        jobs: JobStore,
        results: ResultStore,
        hub: RunProgressHub,
        allowed_hosts: Sequence[str],
        waiting_reason: Callable[[Run], str],
    ) -> None:
        self._runs = runs
        self._jobs = jobs
        self._results = results
        self._hub = hub
        self._allowed_hosts = list(allowed_hosts)
        self._waiting_reason = waiting_reason

    def _pb(self, run: Run) -> runs_pb2.Run:
        message = run.to_pb()
        if run.status is RunStatus.RUNNING:
            message.waiting_reason = self._waiting_reason(run)
        return message

    async def CreateRun(
        self, request: runs_pb2.CreateRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.CreateRunResponse:
        labels = check_labels(dict(request.labels), "labels")
        if len(request.request_id) > 128:
            raise InvalidArgument("request_id", "is at most 128 characters")
        data = spec_data_from_pb(request.spec)
        if request.validate_only:
            return runs_pb2.CreateRunResponse(
                plan=_plan_to_pb(parse_spec(data), self._allowed_hosts)
            )
        spec = validate_spec(data, allowed_hosts=self._allowed_hosts)
        run = await self._runs.create(
            spec, start=request.start, labels=labels, request_id=request.request_id
        )
        logger.info(
            "run %s created (%d sessions, started=%s)",
            run.id,
            spec.sessions,
            request.start,
            extra={"run_id": run.id},
        )
        return runs_pb2.CreateRunResponse(run=self._pb(run))

    async def StartRun(
        self, request: runs_pb2.StartRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.StartRunResponse:
        run = await self._runs.start(require_id(request.run_id, "run_id"))
        if request.now:
            run = await self._runs.expedite(run.id)
        return runs_pb2.StartRunResponse(run=self._pb(run))

    async def PauseRun(
        self, request: runs_pb2.PauseRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.PauseRunResponse:
        run = await self._runs.pause(require_id(request.run_id, "run_id"))
        return runs_pb2.PauseRunResponse(run=self._pb(run))

    async def ResumeRun(
        self, request: runs_pb2.ResumeRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ResumeRunResponse:
        run = await self._runs.resume(require_id(request.run_id, "run_id"))
        return runs_pb2.ResumeRunResponse(run=self._pb(run))

    async def ExpediteRun(
        self, request: runs_pb2.ExpediteRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ExpediteRunResponse:
        run = await self._runs.expedite(require_id(request.run_id, "run_id"))
        return runs_pb2.ExpediteRunResponse(run=self._pb(run))

    async def CancelRun(
        self, request: runs_pb2.CancelRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.CancelRunResponse:
        run = await self._jobs.cancel(require_id(request.run_id, "run_id"))
        return runs_pb2.CancelRunResponse(run=self._pb(run))

    async def GetRun(
        self, request: runs_pb2.GetRunRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.GetRunResponse:
        run = await self._runs.get(require_id(request.run_id, "run_id"))
        return runs_pb2.GetRunResponse(run=self._pb(run))

    async def ListRuns(
        self, request: runs_pb2.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListRunsResponse:
        limit = paging.page_limit(request.page_size, default=50, maximum=1000)
        statuses = [convert.run_status_from_pb(s, "statuses") for s in request.statuses]
        labels = check_labels(dict(request.labels), "labels")
        filters = {"s": sorted(statuses), "n": request.name_prefix, "l": labels}
        position = paging.decode(request.page_token, "runs", filters)
        after = None
        if position is not None:
            try:
                after = (datetime.fromisoformat(position[0]), str(position[1]))
            except (TypeError, ValueError, IndexError):
                raise InvalidArgument("page_token", "is not a page token of this listing") from None
        runs = await self._runs.list_runs(
            limit=limit + 1,
            statuses=statuses,
            name_prefix=request.name_prefix,
            labels=labels,
            after=after,
        )
        token = ""
        if len(runs) > limit:
            runs = runs[:limit]
            last = runs[-1]
            token = paging.encode("runs", [last.created_at.isoformat(), last.id], filters)
        return runs_pb2.ListRunsResponse(
            runs=[self._pb(run) for run in runs], next_page_token=token
        )

    async def GetRunStats(
        self, request: runs_pb2.GetRunStatsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.GetRunStatsResponse:
        stats = await self._results.stats(require_id(request.run_id, "run_id"))
        return runs_pb2.GetRunStatsResponse(stats=convert.stats_to_pb(stats))

    async def ListResults(
        self, request: results_pb2.ListResultsRequest, context: grpc.aio.ServicerContext
    ) -> results_pb2.ListResultsResponse:
        run_id = require_id(request.run_id, "run_id")
        limit = paging.page_limit(request.page_size, default=500, maximum=5000)
        outcomes = [convert.outcome_from_pb(o, "outcomes").value for o in request.outcomes]
        filters = {"r": run_id, "o": sorted(outcomes), "c": request.cell}
        after = paging.decode(request.page_token, "results", filters)
        if after is not None and not isinstance(after, int):
            raise InvalidArgument("page_token", "is not a page token of this listing")
        rows, next_after = await self._results.results(
            run_id, after=after or 0, limit=limit, outcomes=outcomes, cell=request.cell
        )
        return results_pb2.ListResultsResponse(
            results=[result_to_pb(result_from_row(row)) for row in rows],
            next_page_token=""
            if next_after is None
            else paging.encode("results", next_after, filters),
        )

    async def WatchRun(
        self, request: runs_pb2.WatchRunRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[runs_pb2.WatchRunResponse]:
        async for run in self._hub.watch(require_id(request.run_id, "run_id")):
            yield runs_pb2.WatchRunResponse(run=self._pb(run))

    async def ListJobs(
        self, request: runs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> runs_pb2.ListJobsResponse:
        run_id = require_id(request.run_id, "run_id")
        limit = paging.page_limit(request.page_size, default=500, maximum=5000)
        statuses = [convert.job_status_from_pb(s, "statuses") for s in request.statuses]
        filters = {"r": run_id, "s": sorted(statuses)}
        after = paging.decode(request.page_token, "jobs", filters)
        if after is not None and not isinstance(after, int):
            raise InvalidArgument("page_token", "is not a page token of this listing")
        jobs = await self._jobs.list_jobs(
            run_id,
            statuses=statuses,
            after_index=-1 if after is None else after,
            limit=limit + 1,
        )
        token = ""
        if len(jobs) > limit:
            jobs = jobs[:limit]
            token = paging.encode("jobs", jobs[-1].index, filters)
        return runs_pb2.ListJobsResponse(
            jobs=[convert.job_to_pb(job) for job in jobs], next_page_token=token
        )


def _plan_to_pb(spec: RunSpec, allowed_hosts: list[str]) -> runs_pb2.RunPlanSummary:
    summary = summarize_plan(spec, max_buckets=MAX_PLAN_BUCKETS)
    return runs_pb2.RunPlanSummary(
        sessions=summary.sessions,
        cells=[runs_pb2.PlanShare(name=c.key, sessions=c.sessions) for c in summary.cells],
        targets=[runs_pb2.PlanShare(name=t.url, sessions=t.sessions) for t in summary.targets],
        starts_per_bucket=[bucket.sessions for bucket in summary.timeline],
        bucket=duration(summary.bucket),
        span=duration(summary.span),
        hosts=[
            runs_pb2.PlanHost(host=host, allowed=True)
            if host_allowed(host, allowed_hosts)
            else runs_pb2.PlanHost(
                host=host, allowed=False, reason="not in the scheduler's target allowlist"
            )
            for host in summary.hosts
        ],
    )

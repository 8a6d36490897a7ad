"""The scheduler's protobuf adapter for its own read models: stats, jobs, hosts and nodes.

Runs have their codec beside their type (_run.py); cells, results and specs in
services/common/contracts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from services.common.contracts import (
    cell_to_pb,
    node_info_to_pb,
    node_load_to_pb,
    timestamp,
)
from services.common.errors import InvalidArgument
from services.common.types import NodeState, Outcome
from services.scheduler._hosts import HostState
from services.scheduler._registry import NodeRecord
from services.scheduler._run import RunStatus
from services.scheduler._stats import RunStats
from services.scheduler.jobs import Job, JobStatus
from smartfleet.v1 import common_pb2, nodes_pb2, runs_pb2

_NODE_STATE = {state: nodes_pb2.NodeState.Value(f"NODE_STATE_{state.name}") for state in NodeState}
NODE_STATE_FROM_PB = {value: state for state, value in _NODE_STATE.items()}
_OUTCOME = {outcome: common_pb2.Outcome.Value(f"OUTCOME_{outcome.name}") for outcome in Outcome}
_OUTCOME_FROM_PB = {value: outcome for outcome, value in _OUTCOME.items()}
_JOB_STATUS = {
    status: runs_pb2.JobStatus.Value(f"JOB_STATUS_{status.name}") for status in JobStatus
}
_JOB_STATUS_FROM_PB = {value: status for status, value in _JOB_STATUS.items()}
_RUN_STATUS_FROM_PB = {
    runs_pb2.RunStatus.Value(f"RUN_STATUS_{status.name}"): status for status in RunStatus
}


def _from_pb(table: Mapping[Any, Any], value: int, field: str, enum: Any) -> Any:
    found = table.get(value)
    if found is None:
        known = ", ".join(name for name in enum.keys() if not name.endswith("_UNSPECIFIED"))
        raise InvalidArgument(field, f"unknown or unspecified value {value}; one of {known}")
    return found


def outcome_from_pb(value: int, field: str) -> Outcome:
    return cast(Outcome, _from_pb(_OUTCOME_FROM_PB, value, field, common_pb2.Outcome))


def job_status_from_pb(value: int, field: str) -> JobStatus:
    return cast(JobStatus, _from_pb(_JOB_STATUS_FROM_PB, value, field, runs_pb2.JobStatus))


def run_status_from_pb(value: int, field: str) -> RunStatus:
    return cast(RunStatus, _from_pb(_RUN_STATUS_FROM_PB, value, field, runs_pb2.RunStatus))


def _outcome_pb(name: str) -> common_pb2.Outcome.ValueType:
    try:
        return _OUTCOME[Outcome(name)]
    except ValueError:
        return common_pb2.OUTCOME_UNSPECIFIED


def stats_to_pb(stats: RunStats) -> runs_pb2.RunStats:
    return runs_pb2.RunStats(
        run_id=stats.run_id,
        results=stats.results,
        outcomes=[
            runs_pb2.OutcomeCount(outcome=_outcome_pb(outcome), count=count)
            for outcome, count in sorted(stats.outcomes.items(), key=lambda item: -item[1])
        ],
        success_rate=stats.success_rate,
        duration_p50_ms=stats.duration_p50_ms,
        duration_p95_ms=stats.duration_p95_ms,
        duration_max_ms=stats.duration_max_ms,
        cells=[
            runs_pb2.CellStats(
                cell=cell.cell,
                results=cell.results,
                outcomes=[
                    runs_pb2.OutcomeCount(outcome=_outcome_pb(o), count=c)
                    for o, c in sorted(cell.outcomes.items())
                ],
                success_rate=cell.success_rate,
                duration_p50_ms=cell.duration_p50_ms,
                duration_p95_ms=cell.duration_p95_ms,
            )
            for cell in stats.cells
        ],
        metrics=[
            runs_pb2.MetricStats(
                name=metric.name,
                p50=metric.p50,
                p95=metric.p95,
                p99=metric.p99,
                count=metric.count,
            )
            for metric in stats.metrics
        ],
    )


def job_to_pb(job: Job) -> runs_pb2.Job:
    message = runs_pb2.Job(
        id=job.id,
        run_id=job.run_id,
        index=job.index,
        attempt=job.attempt,
        status=_JOB_STATUS[job.status],
        outcome=_outcome_pb(job.outcome),
        error=job.error,
        cell=cell_to_pb(job.cell),
        target_url=job.target_url,
    )
    if job.retry_at is not None and job.status is JobStatus.RETRY_WAIT:
        message.retry_at.CopyFrom(timestamp(job.retry_at))
    return message


def host_to_pb(state: HostState) -> nodes_pb2.HostBackoff:
    message = nodes_pb2.HostBackoff(host=state.host, consecutive_errors=state.consecutive_errors)
    if state.until is not None:
        message.until.CopyFrom(timestamp(state.until))
    return message


def node_to_pb(record: NodeRecord) -> nodes_pb2.Node:
    return nodes_pb2.Node(
        info=node_info_to_pb(record.info),
        state=_NODE_STATE[record.state],
        load=node_load_to_pb(record.load),
        last_heartbeat=timestamp(record.last_heartbeat),
        registered_at=timestamp(record.registered_at),
    )

"""The scheduler's protobuf adapter for its own read models: stats, jobs, hosts and nodes.

Runs have their codec beside their type (_run.py); cells, results and specs in
services/common/contracts.
"""

from __future__ import annotations

from services.common.contracts import (
    cell_to_pb,
    node_info_to_pb,
    node_load_to_pb,
    timestamp,
)
from services.common.types import NodeState
from services.scheduler._hosts import HostState
from services.scheduler._registry import NodeRecord
from services.scheduler._stats import RunStats
from services.scheduler.jobs import Job, JobStatus
from smartfleet.v1 import node_pb2, runs_pb2

_NODE_STATE = {state: node_pb2.NodeState.Value(f"NODE_STATE_{state.name}") for state in NodeState}
NODE_STATE_FROM_PB = {value: state for state, value in _NODE_STATE.items()}


def stats_to_pb(stats: RunStats) -> runs_pb2.RunStats:
    return runs_pb2.RunStats(
        run_id=stats.run_id,
        results=stats.results,
        outcomes=[
            runs_pb2.OutcomeCount(outcome=outcome, count=count)
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
                    runs_pb2.OutcomeCount(outcome=o, count=c)
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
        status=job.status.value,
        outcome=job.outcome,
        error=job.error,
        cell=cell_to_pb(job.cell),
        target_url=job.target_url,
    )
    if job.retry_at is not None and job.status is JobStatus.RETRY_WAIT:
        message.retry_at.CopyFrom(timestamp(job.retry_at))
    return message


def host_to_pb(state: HostState) -> runs_pb2.HostBackoff:
    message = runs_pb2.HostBackoff(host=state.host, consecutive_errors=state.consecutive_errors)
    if state.until is not None:
        message.until.CopyFrom(timestamp(state.until))
    return message


def node_to_pb(record: NodeRecord) -> node_pb2.Node:
    return node_pb2.Node(
        info=node_info_to_pb(record.info),
        state=_NODE_STATE[record.state],
        load=node_load_to_pb(record.load),
        last_heartbeat=timestamp(record.last_heartbeat),
        registered_at=timestamp(record.registered_at),
    )

"""The scheduler's protobuf adapter: RunSpec, Run, stats, results and nodes to and from messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from services.common.contracts import (
    node_info_to_pb,
    node_load_to_pb,
    result_to_pb,
    timestamp,
)
from services.common.types import (
    ErrorClass,
    NavigationTiming,
    NodeState,
    Outcome,
    SessionResult,
)
from services.scheduler._models import ResultRow
from services.scheduler._registry import NodeRecord
from services.scheduler._runs import Run, RunStats, RunStatus
from services.common.spec import RunSpec
from smartfleet.v1 import node_pb2, results_pb2, runs_pb2

_RUN_STATUS = {
    status: runs_pb2.RunStatus.Value(f"RUN_STATUS_{status.name}") for status in RunStatus
}
_NODE_STATE = {state: node_pb2.NodeState.Value(f"NODE_STATE_{state.name}") for state in NodeState}
NODE_STATE_FROM_PB = {value: state for state, value in _NODE_STATE.items()}


def spec_data_from_pb(message: runs_pb2.RunSpec) -> dict[str, Any]:
    """The spec as proto-JSON data for validation; fields left unset take the spec's defaults."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def spec_to_pb(spec: RunSpec) -> runs_pb2.RunSpec:
    return json_format.ParseDict(spec.to_json(), runs_pb2.RunSpec())


def run_to_pb(run: Run) -> runs_pb2.Run:
    message = runs_pb2.Run(
        id=run.id,
        name=run.name,
        status=_RUN_STATUS[run.status],
        spec=spec_to_pb(run.spec),
        counters=runs_pb2.RunCounters(
            planned=run.planned,
            dispatched=run.dispatched,
            succeeded=run.succeeded,
            failed=run.failed,
            retrying=run.retrying,
            in_flight=run.in_flight,
        ),
        created_at=timestamp(run.created_at),
    )
    if run.started_at:
        message.started_at.CopyFrom(timestamp(run.started_at))
    if run.finished_at:
        message.finished_at.CopyFrom(timestamp(run.finished_at))
    return message


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
    )


def result_row_to_pb(row: ResultRow) -> results_pb2.SessionResult:
    detail = row.detail
    return result_to_pb(
        SessionResult(
            job_id=row.job_id,
            attempt=row.attempt,
            run_id=row.run_id,
            index=row.index,
            outcome=Outcome(row.outcome),
            error_class=ErrorClass(row.error_class),
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_ms=row.duration_ms,
            node_id=row.node_id,
            engine=row.engine,
            error=detail.get("error", ""),
            http_status=row.http_status,
            target_url=detail.get("target_url", ""),
            final_url=detail.get("final_url", ""),
            redirect_chain=tuple(detail.get("redirect_chain", ())),
            timing=NavigationTiming(**detail.get("timing", {})),
            browser_version=detail.get("browser_version", ""),
        )
    )


def node_to_pb(record: NodeRecord) -> node_pb2.Node:
    return node_pb2.Node(
        info=node_info_to_pb(record.info),
        state=_NODE_STATE[record.state],
        load=node_load_to_pb(record.load),
        last_heartbeat=timestamp(record.last_heartbeat),
        registered_at=timestamp(record.registered_at),
    )

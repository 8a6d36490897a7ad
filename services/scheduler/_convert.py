"""The scheduler's protobuf adapter: RunSpec, Run, stats, results and nodes to and from messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from services.common.contracts import (
    cell_to_pb,
    node_info_to_pb,
    node_load_to_pb,
    result_to_pb,
    timestamp,
)
from services.common.spec import RunSpec
from services.common.types import (
    ErrorClass,
    NavigationTiming,
    NodeState,
    Outcome,
    SessionResult,
    StepOutcome,
    WebVitals,
)
from services.scheduler._dispatcher import cell_from_json
from services.scheduler._hosts import HostState
from services.scheduler._models import JobRow, ResultRow
from services.scheduler._registry import NodeRecord
from services.scheduler._runs import Run, RunStats, RunStatus
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
            dead=run.dead,
            cancelled=run.cancelled,
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


def job_to_pb(row: JobRow) -> runs_pb2.Job:
    message = runs_pb2.Job(
        id=row.id,
        run_id=row.run_id,
        index=row.index,
        attempt=row.attempt,
        status=row.status,
        outcome=row.outcome or "",
        error=row.error or "",
        cell=cell_to_pb(cell_from_json(row.cell)),
        target_url=row.target_url,
    )
    if row.retry_at is not None and row.status == "retry_wait":
        message.retry_at.CopyFrom(timestamp(row.retry_at))
    return message


def host_to_pb(state: HostState) -> runs_pb2.HostBackoff:
    message = runs_pb2.HostBackoff(host=state.host, consecutive_errors=state.consecutive_errors)
    if state.until is not None:
        message.until.CopyFrom(timestamp(state.until))
    return message


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
            cell=cell_from_json(detail.get("cell") or {}),
            extracted=detail.get("extracted") or {},
            steps=tuple(StepOutcome(**step) for step in detail.get("steps") or ()),
            account=row.account or "",
            artifacts=tuple(detail.get("artifacts") or ()),
            vitals=WebVitals(**(detail.get("vitals") or {})),
            bytes_transferred=detail.get("bytes_transferred", 0),
            request_count=detail.get("request_count", 0),
            console_errors=tuple(detail.get("console_errors") or ()),
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

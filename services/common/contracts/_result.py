"""The SessionResult codec: to and from its protobuf message and its database row.

Adding a result field means the proto, the type (services/common/types.py) and this module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from services.common.contracts._cell import (
    cell_from_json,
    cell_from_pb,
    cell_key,
    cell_to_json,
    cell_to_pb,
)
from services.common.contracts._enums import engine_name, engine_number
from services.common.contracts._time import from_timestamp, timestamp
from services.common.types import (
    ErrorClass,
    NavigationTiming,
    Outcome,
    SessionResult,
    StepOutcome,
    WebVitals,
)
from smartfleet.v1 import common_pb2, results_pb2

_OUTCOME_TO_PB = {
    outcome: common_pb2.Outcome.Value(f"OUTCOME_{outcome.name}") for outcome in Outcome
}
_OUTCOME_FROM_PB = {value: outcome for outcome, value in _OUTCOME_TO_PB.items()}
_CLASS_TO_PB = {
    error_class: common_pb2.ErrorClass.Value(f"ERROR_CLASS_{error_class.name}")
    for error_class in ErrorClass
}
_CLASS_FROM_PB = {value: error_class for error_class, value in _CLASS_TO_PB.items()}
_STEP_TO_PB = {
    name: results_pb2.StepStatus.Value(f"STEP_STATUS_{name.upper()}")
    for name in ("ok", "skipped", "failed")
}
_STEP_FROM_PB = {value: name for name, value in _STEP_TO_PB.items()}


def result_to_pb(result: SessionResult) -> results_pb2.SessionResult:
    t = result.timing
    message = results_pb2.SessionResult(
        job_id=result.job_id,
        attempt=result.attempt,
        run_id=result.run_id,
        index=result.index,
        outcome=_OUTCOME_TO_PB[result.outcome],
        error_class=_CLASS_TO_PB[result.error_class],
        error=result.error,
        http_status=result.http_status,
        target_url=result.target_url,
        final_url=result.final_url,
        redirect_chain=result.redirect_chain,
        timing=results_pb2.NavigationTiming(
            dns_ms=t.dns_ms,
            connect_ms=t.connect_ms,
            ttfb_ms=t.ttfb_ms,
            dom_content_loaded_ms=t.dom_content_loaded_ms,
            load_ms=t.load_ms,
        ),
        duration_ms=result.duration_ms,
        node_id=result.node_id,
        engine=engine_number(result.engine) if result.engine else common_pb2.ENGINE_UNSPECIFIED,
        started_at=timestamp(result.started_at),
        finished_at=timestamp(result.finished_at),
        browser_version=result.browser_version,
        cell=cell_to_pb(result.cell),
        steps=[
            results_pb2.StepOutcome(
                index=step.index,
                action=step.action,
                status=_STEP_TO_PB[step.status],
                duration_ms=step.duration_ms,
                error=step.error,
            )
            for step in result.steps
        ],
        account=result.account,
        artifacts=result.artifacts,
        vitals=results_pb2.WebVitals(
            ttfb_ms=result.vitals.ttfb_ms,
            fcp_ms=result.vitals.fcp_ms,
            lcp_ms=result.vitals.lcp_ms,
            cls=result.vitals.cls,
        ),
        bytes_transferred=result.bytes_transferred,
        request_count=result.request_count,
        console_errors=result.console_errors,
    )
    if result.stored_at is not None:
        message.stored_at.CopyFrom(timestamp(result.stored_at))
    if result.extracted:
        message.extracted.update(result.extracted)
    return message


def result_from_pb(message: results_pb2.SessionResult) -> SessionResult:
    """Raises ValueError on an outcome this version does not know."""
    if message.outcome not in _OUTCOME_FROM_PB:
        raise ValueError(f"unknown outcome {message.outcome}")
    t = message.timing
    now = datetime.now(UTC)
    return SessionResult(
        job_id=message.job_id,
        attempt=message.attempt,
        run_id=message.run_id,
        index=message.index,
        outcome=_OUTCOME_FROM_PB[message.outcome],
        error_class=_CLASS_FROM_PB.get(message.error_class, ErrorClass.NONE),
        error=message.error,
        http_status=message.http_status,
        target_url=message.target_url,
        final_url=message.final_url,
        redirect_chain=tuple(message.redirect_chain),
        timing=NavigationTiming(
            dns_ms=t.dns_ms,
            connect_ms=t.connect_ms,
            ttfb_ms=t.ttfb_ms,
            dom_content_loaded_ms=t.dom_content_loaded_ms,
            load_ms=t.load_ms,
        ),
        duration_ms=message.duration_ms,
        node_id=message.node_id,
        engine=engine_name(message.engine),
        started_at=from_timestamp(message.started_at) or now,
        finished_at=from_timestamp(message.finished_at) or now,
        browser_version=message.browser_version,
        cell=cell_from_pb(message.cell),
        extracted=json_format.MessageToDict(message.extracted) if message.extracted.fields else {},
        steps=tuple(
            StepOutcome(
                index=step.index,
                action=step.action,
                status=_STEP_FROM_PB.get(step.status, "failed"),
                duration_ms=step.duration_ms,
                error=step.error,
            )
            for step in message.steps
        ),
        account=message.account,
        artifacts=tuple(message.artifacts),
        vitals=WebVitals(
            ttfb_ms=message.vitals.ttfb_ms,
            fcp_ms=message.vitals.fcp_ms,
            lcp_ms=message.vitals.lcp_ms,
            cls=message.vitals.cls,
        ),
        bytes_transferred=message.bytes_transferred,
        request_count=message.request_count,
        console_errors=tuple(message.console_errors),
        stored_at=from_timestamp(message.stored_at),
    )


def result_to_row(result: SessionResult, *, stored_at: datetime) -> dict[str, Any]:
    """The `results` row of a result: the columns queries filter and group by, the rest in
    `detail` (spelled out: dataclasses.asdict copies deeply and costs several times as much)."""
    timing, vitals = result.timing, result.vitals
    return {
        "job_id": result.job_id,
        "attempt": result.attempt,
        "run_id": result.run_id,
        "index": result.index,
        "outcome": result.outcome.value,
        "error_class": result.error_class.value,
        "http_status": result.http_status,
        "duration_ms": result.duration_ms,
        "node_id": result.node_id,
        "engine": result.engine,
        "cell_key": cell_key(result.cell),
        "account": result.account or None,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "stored_at": stored_at,
        "detail": {
            "error": result.error,
            "target_url": result.target_url,
            "final_url": result.final_url,
            "redirect_chain": list(result.redirect_chain),
            "timing": {
                "dns_ms": timing.dns_ms,
                "connect_ms": timing.connect_ms,
                "ttfb_ms": timing.ttfb_ms,
                "dom_content_loaded_ms": timing.dom_content_loaded_ms,
                "load_ms": timing.load_ms,
            },
            "browser_version": result.browser_version,
            "extracted": result.extracted,
            "steps": [
                {
                    "index": step.index,
                    "action": step.action,
                    "status": step.status,
                    "duration_ms": step.duration_ms,
                    "error": step.error,
                }
                for step in result.steps
            ],
            "artifacts": list(result.artifacts),
            "cell": cell_to_json(result.cell),
            "vitals": {
                "ttfb_ms": vitals.ttfb_ms,
                "fcp_ms": vitals.fcp_ms,
                "lcp_ms": vitals.lcp_ms,
                "cls": vitals.cls,
            },
            "bytes_transferred": result.bytes_transferred,
            "request_count": result.request_count,
            "console_errors": list(result.console_errors),
        },
    }


def result_from_row(row: Any) -> SessionResult:
    """A stored result back from its `results` row (an ORM row or any object with its columns)."""
    detail: dict[str, Any] = row.detail
    return SessionResult(
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
        stored_at=row.stored_at,
    )

"""Adapter between the shared domain types and their protobuf messages (envelope, results, nodes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.spec import Step
from services.common.types import (
    Cell,
    ErrorClass,
    Geolocation,
    JobEnvelope,
    NavigationTiming,
    NodeInfo,
    NodeLoad,
    Outcome,
    SessionResult,
    StepOutcome,
    WebVitals,
)
from smartfleet.v1 import job_pb2, node_pb2, results_pb2, runs_pb2

# The four conversions below run several times per job; they do what Timestamp.FromDatetime,
# ToDatetime, Duration.FromTimedelta and ToTimedelta do, in a fraction of their time.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NANOS = 1_000_000_000


def timestamp(value: datetime | None) -> Timestamp:
    if value is None:
        return Timestamp()
    since = value.astimezone(UTC) - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def from_timestamp(message: Timestamp) -> datetime | None:
    seconds, nanos = message.seconds, message.nanos
    if seconds == 0 and nanos == 0:
        return None
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def duration(value: timedelta) -> Duration:
    seconds, nanos = value.days * 86_400 + value.seconds, value.microseconds * 1000
    if seconds < 0 and nanos > 0:  # both carry the sign, as the Duration message requires
        seconds, nanos = seconds + 1, nanos - _NANOS
    return Duration(seconds=seconds, nanos=nanos)


def from_duration(message: Duration) -> timedelta:
    nanos = message.nanos
    micros = nanos // 1000 if nanos >= 0 else -(-nanos // 1000)  # toward zero
    return timedelta(seconds=message.seconds, microseconds=micros)


_OUTCOME_TO_PB = {
    outcome: results_pb2.Outcome.Value(f"OUTCOME_{outcome.name}") for outcome in Outcome
}
_OUTCOME_FROM_PB = {value: outcome for outcome, value in _OUTCOME_TO_PB.items()}
_CLASS_TO_PB = {
    error_class: results_pb2.ErrorClass.Value(f"ERROR_CLASS_{error_class.name}")
    for error_class in ErrorClass
}
_CLASS_FROM_PB = {value: error_class for error_class, value in _CLASS_TO_PB.items()}


def step_to_pb(step: Step) -> runs_pb2.Step:
    return json_format.ParseDict(
        step.model_dump(mode="json", by_alias=True, exclude_none=True), runs_pb2.Step()
    )


def step_from_pb(message: runs_pb2.Step) -> Step:
    return Step.model_validate(json_format.MessageToDict(message, preserving_proto_field_name=True))


def cell_to_pb(cell: Cell) -> runs_pb2.Cell:
    message = runs_pb2.Cell(
        device=cell.device,
        locale=cell.locale,
        timezone=cell.timezone,
        engine=cell.engine,
        key=cell.key,
    )
    if cell.labels:  # filling a map field is slow even when empty
        message.labels.update(cell.labels)
    if cell.geolocation is not None:
        message.geolocation.CopyFrom(
            runs_pb2.Geolocation(
                latitude=cell.geolocation.latitude,
                longitude=cell.geolocation.longitude,
                accuracy=cell.geolocation.accuracy,
            )
        )
    return message


def cell_from_pb(message: runs_pb2.Cell) -> Cell:
    geolocation = None
    if message.HasField("geolocation"):
        g = message.geolocation
        geolocation = Geolocation(latitude=g.latitude, longitude=g.longitude, accuracy=g.accuracy)
    return Cell(
        device=message.device,
        locale=message.locale,
        timezone=message.timezone,
        geolocation=geolocation,
        engine=message.engine or "chromium",
        labels=tuple(sorted(message.labels.items())),
    )


def envelope_to_bytes(envelope: JobEnvelope) -> bytes:
    return job_pb2.JobEnvelope(
        job_id=envelope.job_id,
        attempt=envelope.attempt,
        run_id=envelope.run_id,
        index=envelope.index,
        target_url=envelope.target_url,
        engine=envelope.engine,
        session_timeout=duration(envelope.session_timeout),
        deadline=timestamp(envelope.deadline),
        allowed_hosts=envelope.allowed_hosts,
        steps=[step_to_pb(step) for step in envelope.steps],
        cell=cell_to_pb(envelope.cell),
        account=envelope.account,
        write_back_state=envelope.write_back_state,
        artifacts=envelope.artifacts,
        seed=envelope.seed,
    ).SerializeToString()


def envelope_from_bytes(data: bytes) -> JobEnvelope:
    message = job_pb2.JobEnvelope.FromString(data)
    return JobEnvelope(
        job_id=message.job_id,
        attempt=message.attempt,
        run_id=message.run_id,
        index=message.index,
        target_url=message.target_url,
        engine=message.engine,
        session_timeout=from_duration(message.session_timeout),
        deadline=from_timestamp(message.deadline) or datetime.now(UTC),
        allowed_hosts=tuple(message.allowed_hosts),
        steps=tuple(step_from_pb(step) for step in message.steps),
        cell=cell_from_pb(message.cell),
        account=message.account,
        write_back_state=message.write_back_state,
        artifacts=message.artifacts or "never",
        seed=message.seed,
    )


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
        engine=result.engine,
        started_at=timestamp(result.started_at),
        finished_at=timestamp(result.finished_at),
        browser_version=result.browser_version,
        cell=cell_to_pb(result.cell),
        steps=[
            results_pb2.StepOutcome(
                index=step.index,
                action=step.action,
                status=step.status,
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
        engine=message.engine,
        started_at=from_timestamp(message.started_at) or now,
        finished_at=from_timestamp(message.finished_at) or now,
        browser_version=message.browser_version,
        cell=cell_from_pb(message.cell),
        extracted=json_format.MessageToDict(message.extracted) if message.extracted.fields else {},
        steps=tuple(
            StepOutcome(
                index=step.index,
                action=step.action,
                status=step.status,
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
    )


def node_info_to_pb(info: NodeInfo) -> node_pb2.NodeInfo:
    return node_pb2.NodeInfo(
        node_id=info.node_id,
        host=info.host,
        engines=info.engines,
        labels=info.labels,
        slots=info.slots,
        version=info.version,
        playwright_version=info.playwright_version,
        browser_versions=info.browser_versions,
    )


def node_info_from_pb(message: node_pb2.NodeInfo) -> NodeInfo:
    return NodeInfo(
        node_id=message.node_id,
        host=message.host,
        engines=tuple(message.engines),
        labels=dict(message.labels),
        slots=message.slots,
        version=message.version,
        playwright_version=message.playwright_version,
        browser_versions=dict(message.browser_versions),
    )


def node_load_to_pb(load: NodeLoad) -> node_pb2.NodeLoad:
    return node_pb2.NodeLoad(
        busy_slots=load.busy_slots,
        free_slots=load.free_slots,
        cpu_percent=load.cpu_percent,
        rss_bytes=load.rss_bytes,
    )


def node_load_from_pb(message: node_pb2.NodeLoad) -> NodeLoad:
    return NodeLoad(
        busy_slots=message.busy_slots,
        free_slots=message.free_slots,
        cpu_percent=message.cpu_percent,
        rss_bytes=message.rss_bytes,
    )

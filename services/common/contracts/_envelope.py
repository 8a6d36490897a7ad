"""The JobEnvelope codec (what travels on the bus) and the Step messages inside it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from google.protobuf import json_format

from services.common.contracts._cell import cell_from_pb, cell_to_pb
from services.common.contracts._enums import (
    engine_name,
    engine_number,
    from_proto_json,
    number,
    spelling,
    to_proto_json,
)
from services.common.contracts._time import duration, from_duration, from_timestamp, timestamp
from services.common.spec import Step
from services.common.types import JobEnvelope
from smartfleet.v1 import job_pb2, runs_pb2

_STEP = runs_pb2.Step.DESCRIPTOR
_ARTIFACTS = runs_pb2.ArtifactPolicy.DESCRIPTOR


def step_to_pb(step: Step) -> runs_pb2.Step:
    data = step.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json_format.ParseDict(to_proto_json(data, _STEP), runs_pb2.Step())


def step_from_pb(message: runs_pb2.Step) -> Step:
    data = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return Step.model_validate(from_proto_json(data, _STEP))


def envelope_to_bytes(envelope: JobEnvelope) -> bytes:
    return job_pb2.JobEnvelope(
        job_id=envelope.job_id,
        attempt=envelope.attempt,
        run_id=envelope.run_id,
        index=envelope.index,
        target_url=envelope.target_url,
        engine=engine_number(envelope.engine),
        session_timeout=duration(envelope.session_timeout),
        deadline=timestamp(envelope.deadline),
        allowed_hosts=envelope.allowed_hosts,
        steps=[step_to_pb(step) for step in envelope.steps],
        cell=cell_to_pb(envelope.cell),
        account=envelope.account,
        write_back_state=envelope.write_back_state,
        artifacts=cast(runs_pb2.ArtifactPolicy.ValueType, number(_ARTIFACTS, envelope.artifacts)),
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
        engine=engine_name(message.engine),
        session_timeout=from_duration(message.session_timeout),
        deadline=from_timestamp(message.deadline) or datetime.now(UTC),
        allowed_hosts=tuple(message.allowed_hosts),
        steps=tuple(step_from_pb(step) for step in message.steps),
        cell=cell_from_pb(message.cell),
        account=message.account,
        write_back_state=message.write_back_state,
        artifacts=spelling(_ARTIFACTS, message.artifacts) or "never",
        seed=message.seed,
    )

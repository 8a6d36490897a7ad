"""The RunSpec codec: the spec's JSON (what files hold and the database keeps) to and from its
protobuf message.

The JSON spells enum values as people do (`engine: chromium`, `pacing: {mode: window}`) and
writes per-engine limits as a map (`engine_concurrency: {chromium: 4}`); the message carries
enum numbers and a list of EngineLimit. Everything else is proto-JSON with field names.
"""

from __future__ import annotations

import copy
from typing import Any

from google.protobuf import json_format

from services.common.contracts._enums import from_proto_json, to_proto_json
from services.common.spec import RunSpec
from smartfleet.v1 import runs_pb2

_SPEC = runs_pb2.RunSpec.DESCRIPTOR


def spec_data_from_pb(message: runs_pb2.RunSpec) -> dict[str, Any]:
    """The spec as JSON data for validation; fields left unset take the spec's defaults."""
    data = from_proto_json(
        json_format.MessageToDict(message, preserving_proto_field_name=True), _SPEC
    )
    limits = data.get("limits")
    if isinstance(limits, dict) and isinstance(limits.get("engine_concurrency"), list):
        limits["engine_concurrency"] = {
            entry.get("engine", ""): entry.get("max_concurrency", 0)
            for entry in limits["engine_concurrency"]
        }
    return data


def spec_message(data: dict[str, Any]) -> runs_pb2.RunSpec:
    """A RunSpec message from the spec's JSON; raises json_format.ParseError naming a bad field."""
    proto_json = to_proto_json(_engine_limits_as_list(data), _SPEC)
    return json_format.ParseDict(proto_json, runs_pb2.RunSpec())


def spec_to_pb(spec: RunSpec) -> runs_pb2.RunSpec:
    return spec_message(spec.to_json())


def _engine_limits_as_list(data: dict[str, Any]) -> dict[str, Any]:
    limits = data.get("limits")
    if not isinstance(limits, dict) or not isinstance(limits.get("engine_concurrency"), dict):
        return data
    data = copy.copy(data)
    data["limits"] = {
        **limits,
        "engine_concurrency": [
            {"engine": engine, "max_concurrency": cap}
            for engine, cap in limits["engine_concurrency"].items()
        ],
    }
    return data

"""The RunSpec codec: the validated spec to its protobuf message, and a message to spec data.

A spec's database form is its proto-JSON (`RunSpec.to_json()`, read back with
`RunSpec.model_validate`), so the message and the row share one spelling.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from services.common.spec import RunSpec
from smartfleet.v1 import runs_pb2


def spec_data_from_pb(message: runs_pb2.RunSpec) -> dict[str, Any]:
    """The spec as proto-JSON data for validation; fields left unset take the spec's defaults."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def spec_to_pb(spec: RunSpec) -> runs_pb2.RunSpec:
    return json_format.ParseDict(spec.to_json(), runs_pb2.RunSpec())

"""Codecs between the shared domain types and their protobuf messages and database rows.

One module per concept (cell, result, envelope, spec, node, time), each the only place that
converts it; adapters (servicers, clients, stores) import from here.
"""

from services.common.contracts._cell import (
    cell_from_json,
    cell_from_pb,
    cell_key,
    cell_to_json,
    cell_to_pb,
)
from services.common.contracts._enums import (
    engine_name,
    engine_number,
    from_proto_json,
    spelling,
    to_proto_json,
)
from services.common.contracts._envelope import (
    envelope_from_bytes,
    envelope_to_bytes,
    step_from_pb,
    step_to_pb,
)
from services.common.contracts._node import (
    node_info_from_pb,
    node_info_to_pb,
    node_load_from_pb,
    node_load_to_pb,
)
from services.common.contracts._result import (
    result_from_pb,
    result_from_row,
    result_to_pb,
    result_to_row,
)
from services.common.contracts._spec import spec_data_from_pb, spec_message, spec_to_pb
from services.common.contracts._time import duration, from_duration, from_timestamp, timestamp

__all__ = [
    "cell_from_json",
    "cell_from_pb",
    "cell_key",
    "cell_to_json",
    "cell_to_pb",
    "duration",
    "engine_name",
    "engine_number",
    "envelope_from_bytes",
    "envelope_to_bytes",
    "from_duration",
    "from_proto_json",
    "from_timestamp",
    "node_info_from_pb",
    "node_info_to_pb",
    "node_load_from_pb",
    "node_load_to_pb",
    "result_from_pb",
    "result_from_row",
    "result_to_pb",
    "result_to_row",
    "spec_data_from_pb",
    "spec_message",
    "spec_to_pb",
    "spelling",
    "step_from_pb",
    "step_to_pb",
    "timestamp",
    "to_proto_json",
]

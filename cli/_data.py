"""Fleet API messages as plain data for JSON, JSONL, YAML and CSV: one spelling of each value.

Proto JSON writes 64-bit integers as strings, enums as `OUTCOME_ASSERTION_FAILED` and
durations as `300s`. Programs reading smartctl want numbers as numbers, enums in the lowercase
spelling the rest of Smartfleet uses (`assertion_failed`) and durations as a spec writes them
(`5m`). Everything here is derived from the message descriptors, so a field that becomes an
enum (or an int64) tomorrow is spelt the same way without touching this module.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from functools import cache
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from cli._errors import CliError
from services.common.durations import format_duration
from smartfleet.v1 import runs_pb2

_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_DURATION = "google.protobuf.Duration"
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@cache
def enum_prefix(enum: EnumDescriptor) -> str:
    """The prefix every value name of the enum carries: `RUN_STATUS_` for RunStatus."""
    from_type = _CAMEL_BOUNDARY.sub("_", enum.name).upper() + "_"
    names = [value.name for value in enum.values]
    if all(name.startswith(from_type) for name in names):
        return from_type
    # Otherwise the longest common prefix that ends at an underscore (or none).
    common = names[0] if names else ""
    for name in names[1:]:
        while not name.startswith(common):
            common = common[:-1]
    return common[: common.rfind("_") + 1] if "_" in common else ""


def enum_text(enum: EnumDescriptor, number: int) -> str:
    """An enum value as smartctl spells it everywhere: `assertion_failed`, `running`."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)  # a value newer than this client: keep the number
    return value.name.removeprefix(enum_prefix(enum)).lower()


def enum_field_text(message: Message, field_name: str) -> str:
    """The enum field `field_name` of `message`, spelt by enum_text."""
    field = cast(FieldDescriptor, message.DESCRIPTOR.fields_by_name[field_name])
    enum: EnumDescriptor | None = field.enum_type
    assert enum is not None
    return enum_text(enum, getattr(message, field_name))


def duration_text(proto_json: str) -> str:
    """`300s` → `5m`, `1.5s` → `1500ms`: the spelling spec files use."""
    seconds = Decimal(proto_json.removesuffix("s"))
    return format_duration(timedelta(seconds=float(seconds)))


def message_data(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data: proto field names, zero values, smartctl's spellings."""
    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    return _message(data, descriptor)


def _message(data: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key)
        if field is not None:
            data[key] = _field(field, value)
    return data


def _field(field: FieldDescriptor, value: Any) -> Any:
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        value_field = message_type.fields_by_name["value"]
        return {key: _single(value_field, item) for key, item in value.items()}
    if field.is_repeated and isinstance(value, list):
        return [_single(field, item) for item in value]
    return _single(field, value)


def _single(field: FieldDescriptor, value: Any) -> Any:
    if field.type in _INT64_TYPES and isinstance(value, str):
        return int(value)
    if field.enum_type is not None:
        if isinstance(value, str) and value in field.enum_type.values_by_name:
            return enum_text(field.enum_type, field.enum_type.values_by_name[value].number)
        return enum_text(field.enum_type, value) if isinstance(value, int) else value
    message_type = field.message_type
    if message_type is None or not isinstance(value, dict | str):
        return value
    if message_type.full_name == _DURATION and isinstance(value, str):
        return duration_text(value)
    if message_type.full_name.startswith("smartfleet.") and isinstance(value, dict):
        return _message(value, message_type)
    return value  # Timestamp (RFC 3339), Struct and the other well-known types as they are


def job_statuses(text: str) -> list[runs_pb2.JobStatus.ValueType]:
    """`--status dead` as the JobStatus filter (none: every status); CliError naming the flag."""
    if not text:
        return []
    enum = runs_pb2.JobStatus.DESCRIPTOR
    for value in enum.values:
        if value.number and enum_text(enum, value.number) == text:
            return [cast(runs_pb2.JobStatus.ValueType, value.number)]
    known = ", ".join(enum_text(enum, v.number) for v in enum.values if v.number)
    raise CliError(f"--status: unknown status {text!r}; one of {known}")

"""One spelling of each enum value for people: the value's name without its type's prefix, in
lower case (`PACING_MODE_FAST` → `fast`, `OUTCOME_ASSERTION_FAILED` → `assertion_failed`).

Spec files, the database's spec JSON, the CLI's every output and docs use it; protobuf messages
carry the numbers. The conversions here work from the descriptors, so a new enum or value needs
no code.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from smartfleet.v1 import common_pb2

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@cache
def enum_prefix(enum: EnumDescriptor) -> str:
    """`PacingMode` → `PACING_MODE_` (the prefix every value of the enum carries)."""
    return _CAMEL.sub("_", enum.name).upper() + "_"


@cache
def _spellings(enum: EnumDescriptor) -> dict[int, str]:
    prefix = enum_prefix(enum)
    return {
        value.number: value.name.removeprefix(prefix).lower()
        for value in enum.values
        if value.number != 0
    }


@cache
def _numbers(enum: EnumDescriptor) -> dict[str, int]:
    return {spelling: number for number, spelling in _spellings(enum).items()}


def spelling(enum: EnumDescriptor, number: int) -> str:
    """The value's spelling; "" for the unspecified value (or a number this code does not know)."""
    return _spellings(enum).get(number, "")


def number(enum: EnumDescriptor, text: str) -> int:
    """The number of a spelling (or of the value's full name); raises ValueError, listing the
    spellings, for anything else."""
    found = _numbers(enum).get(text)
    if found is None:
        value = enum.values_by_name.get(text)
        if value is None or value.number == 0:
            known = ", ".join(_numbers(enum))
            raise ValueError(f"unknown value {text!r}; one of {known}")
        found = value.number
    return found


def spellings(enum: EnumDescriptor) -> list[str]:
    return list(_numbers(enum))


def _unspecified(enum: EnumDescriptor, value: Any) -> bool:
    return isinstance(value, str | int) and value in (
        enum.values_by_number[0].name,
        "unspecified",
        0,
    )


def _is_plain_message(field: FieldDescriptor) -> bool:
    """A message field of ours (well-known types such as Duration keep their JSON form)."""
    return field.message_type is not None and not field.message_type.full_name.startswith(
        "google.protobuf."
    )


def _convert(data: Any, descriptor: Descriptor, *, to_proto: bool) -> Any:
    if not isinstance(data, dict):
        return data
    converted: dict[str, Any] = {}
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            converted[key] = value  # unknown: left for the parser to name
            continue
        if field.enum_type is not None:
            enum = field.enum_type

            def one(item: Any, enum: EnumDescriptor = enum) -> Any:
                if to_proto and isinstance(item, str) and item in _numbers(enum):
                    return enum.values_by_number[_numbers(enum)[item]].name
                if not to_proto and isinstance(item, str) and item in enum.values_by_name:
                    return spelling(enum, enum.values_by_name[item].number) or item
                return item

            if _unspecified(enum, value):
                continue  # "not given", in either spelling: left out
            if field.is_repeated and isinstance(value, list):
                converted[key] = [one(v) for v in value if not _unspecified(enum, v)]
            else:
                converted[key] = one(value)
        elif _is_plain_message(field):
            message = cast(Descriptor, field.message_type)
            if message.GetOptions().map_entry:
                value_field = message.fields_by_name["value"]
                if _is_plain_message(value_field) and isinstance(value, dict):
                    value_type = cast(Descriptor, value_field.message_type)
                    converted[key] = {
                        k: _convert(v, value_type, to_proto=to_proto) for k, v in value.items()
                    }
                else:
                    converted[key] = value
            elif isinstance(value, list):
                converted[key] = [_convert(v, message, to_proto=to_proto) for v in value]
            else:
                converted[key] = _convert(value, message, to_proto=to_proto)
        else:
            converted[key] = value
    return converted


def to_proto_json(data: Any, descriptor: Descriptor) -> Any:
    """People's JSON (enum values spelled) → proto-JSON (enum value names) for ParseDict."""
    return _convert(data, descriptor, to_proto=True)


def from_proto_json(data: Any, descriptor: Descriptor) -> Any:
    """Proto-JSON (from MessageToDict) → people's JSON: enum values spelled."""
    return _convert(data, descriptor, to_proto=False)


def engine_number(name: str) -> common_pb2.Engine.ValueType:
    """An engine's name ("chromium") as its Engine value."""
    return cast(common_pb2.Engine.ValueType, number(common_pb2.Engine.DESCRIPTOR, name))


def engine_name(value: int) -> str:
    """An Engine value as its name; "" for unspecified."""
    return spelling(common_pb2.Engine.DESCRIPTOR, value)

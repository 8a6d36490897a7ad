"""Builds a RunSpec from a YAML/JSON file and command-line flags (the spec adapter)."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration

from cli._errors import CliError
from services.common.contracts import engine_number, spec_data_from_pb, to_proto_json
from services.common.durations import parse_duration
from services.common.errors import InvalidArgument
from services.common.spec import RunSpec, parse_spec
from smartfleet.v1 import runs_pb2

_DURATION = Duration.DESCRIPTOR.full_name


def load_spec_document(path: Path, *, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read a spec file: JSON when it ends in .json, YAML otherwise (YAML also reads JSON).

    String values may name environment variables, `${BASE_URL}` or `${BASE_URL:-default}`;
    one that is unset (and has no default) is an error naming it. `$${` is a literal `${`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read spec file {path}: {error.strerror or error}") from error
    document = parse_document(text, source=str(path), json_only=path.suffix == ".json")
    return interpolate(
        document, source=str(path), environ=os.environ if environ is None else environ
    )


def parse_document(text: str, *, source: str, json_only: bool = False) -> dict[str, Any]:
    """A mapping from YAML or JSON text; a syntax error is one line: where, and why."""
    try:
        document = json.loads(text) if json_only else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise CliError(
            f"{source}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}"
        ) from error
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(error.problem or error.context or "syntax error").split())
        raise CliError(f"{source}{where}: not valid YAML: {problem}") from error
    except yaml.YAMLError as error:
        raise CliError(f"{source}: not valid YAML: {' '.join(str(error).split())}") from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise CliError(
            f"{source}: a run spec must be a mapping of fields, got {type(document).__name__}"
        )
    return document


_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, *, source: str, environ: Mapping[str, str], path: str = "") -> Any:
    """`${NAME}` / `${NAME:-default}` in every string value (keys stay as written)."""
    if isinstance(value, dict):
        return {
            key: interpolate(
                item, source=source, environ=environ, path=f"{path}.{key}" if path else str(key)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            interpolate(item, source=source, environ=environ, path=f"{path}[{index}]")
            for index, item in enumerate(value)
        ]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        if default is not None and not found:
            return default
        if found is None:
            raise CliError(
                f"{source}: {path}: environment variable {name} is not set "
                f"(set it, or write ${{{name}:-default}})"
            )
        return found

    return _VARIABLE.sub(substitute, value)


def spec_from_document(document: dict[str, Any], *, source: str = "spec") -> runs_pb2.RunSpec:
    """Parse a spec mapping strictly: unknown fields and bad values are errors naming the field."""
    normalized = _normalize(document, runs_pb2.RunSpec.DESCRIPTOR, path="", source=source)
    limits = normalized.get("limits")
    if isinstance(limits, dict) and isinstance(limits.get("engine_concurrency"), dict):
        # Files write per-engine limits as a map; the message holds a list of EngineLimit.
        limits["engine_concurrency"] = [
            {"engine": engine, "max_concurrency": cap}
            for engine, cap in limits["engine_concurrency"].items()
        ]
    spec = runs_pb2.RunSpec()
    try:
        json_format.ParseDict(
            to_proto_json(normalized, runs_pb2.RunSpec.DESCRIPTOR),
            spec,
            ignore_unknown_fields=False,
        )
    except json_format.ParseError as error:
        raise CliError(f"{source}: {error}") from error
    return spec


def build_spec(
    *,
    document: dict[str, Any] | None = None,
    source: str = "spec",
    targets: Sequence[str] = (),
    sessions: int | None = None,
    name: str | None = None,
    concurrency: int | None = None,
    timeout: str | None = None,
    engine: str | None = None,
) -> runs_pb2.RunSpec:
    """The file's spec (if any) with the flags given on top; flags win over the file."""
    spec = spec_from_document(document, source=source) if document else runs_pb2.RunSpec()
    if targets:
        del spec.targets[:]
        spec.targets.extend(targets)
    if sessions is not None:
        spec.sessions = sessions
    elif spec.sessions == 0:
        spec.sessions = 1
    if name is not None:
        spec.name = name
    if concurrency is not None:
        spec.limits.max_concurrency = concurrency
    if timeout is not None:
        spec.limits.session_timeout.FromTimedelta(_duration("--timeout", timeout))
    if engine is not None:
        try:
            spec.engine = engine_number(engine)
        except ValueError as error:
            raise CliError(f"--engine: {error}") from error
    if not spec.targets:
        raise CliError(
            "a run needs at least one target: pass --target URL or list `targets` in the spec file"
        )
    return spec


def _duration(field: str, text: str) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError as error:
        raise CliError(f"{field}: {error}") from error
    if value <= timedelta(0):
        raise CliError(f"{field}: must be positive, got {text!r}")
    return value


def _normalize(value: Any, descriptor: Descriptor, *, path: str, source: str) -> dict[str, Any]:
    """Check field names against the message and turn `30s`-style durations into proto JSON."""
    if not isinstance(value, dict):
        where = path or "the spec"
        raise CliError(f"{source}: {where} must be a mapping, got {type(value).__name__}")
    fields = {field.name: field for field in descriptor.fields}
    fields.update({field.json_name: field for field in descriptor.fields})
    normalized: dict[str, Any] = {}
    for key, item in value.items():
        dotted = f"{path}.{key}" if path else str(key)
        field = fields.get(str(key))
        if field is None:
            known = sorted(f.name for f in descriptor.fields)
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CliError(
                f"{source}: unknown field {dotted!r}{hint} (fields here: {', '.join(known)})"
            )
        normalized[key] = _normalize_field(field, item, path=dotted, source=source)
    return normalized


def _normalize_field(field: FieldDescriptor, value: Any, *, path: str, source: str) -> Any:
    if field.type != FieldDescriptor.TYPE_MESSAGE or value is None:
        return value
    if field.is_repeated and isinstance(value, list):
        return [
            _normalize_single(field, item, path=f"{path}[{index}]", source=source)
            for index, item in enumerate(value)
        ]
    return _normalize_single(field, value, path=path, source=source)


def _normalize_single(field: FieldDescriptor, value: Any, *, path: str, source: str) -> Any:
    message_type = field.message_type
    if message_type is None:
        return value
    if message_type.full_name == _DURATION:
        if not isinstance(value, str):
            raise CliError(
                f"{source}: {path}: write durations like 500ms, 30s, 2m or 1h, got {value!r}"
            )
        try:
            parsed = _duration(path, value)
        except CliError as error:
            raise CliError(f"{source}: {error.message}") from error
        message = Duration()
        message.FromTimedelta(parsed)
        return message.ToJsonString()
    if message_type.GetOptions().map_entry:
        return value
    if message_type.full_name.startswith("smartfleet."):
        return _normalize(value, message_type, path=path, source=source)
    return value


def validated_spec(spec: runs_pb2.RunSpec) -> RunSpec:
    """The spec checked here as the scheduler checks it (all but the server's allowlist)."""
    try:
        return parse_spec(spec_data_from_pb(spec))
    except InvalidArgument as error:
        raise CliError(f"invalid argument: {error.message}") from error

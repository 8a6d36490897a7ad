"""The JSON Schema of a run spec file, generated from the pydantic RunSpec.

Editors (VS Code's YAML extension, JetBrains) complete and check spec files with it:
`# yaml-language-server: $schema=docs/run-spec.schema.json`. docs/run-spec.schema.json is this
output, and a unit test fails when the two drift.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from services.common.spec import RunSpec

DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)\s*)+$"


class _SpecSchema(GenerateJsonSchema):
    def timedelta_schema(self, schema: core_schema.TimedeltaSchema) -> dict[str, Any]:
        # Spec files write durations as 500ms, 30s, 2m or 1h30m (not ISO 8601).
        return {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "a duration like 500ms, 30s, 2m or 1h30m",
        }


def run_spec_schema() -> dict[str, Any]:
    schema = RunSpec.model_json_schema(by_alias=True, schema_generator=_SpecSchema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "Smartfleet run spec",
        "description": "A run: targets, steps, sessions, matrix, pacing, limits "
        "(smartctl run create -f). See docs/run-spec.md.",
    }


def run_spec_schema_text() -> str:
    return json.dumps(run_spec_schema(), indent=2, sort_keys=False) + "\n"

"""The documentation's examples stay valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from services.common.spec import parse_spec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "run-spec.md"
EXAMPLES = [
    data
    for block in re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    if isinstance(data := yaml.safe_load(block), dict) and "targets" in data
]


@pytest.mark.parametrize("example", EXAMPLES, ids=[str(e.get("name")) for e in EXAMPLES])
def test_worked_example_is_a_valid_spec(example: dict[str, object]) -> None:
    """Each whole-spec example in docs/run-spec.md passes the scheduler's validation."""
    assert parse_spec(example).sessions >= 1


def test_there_are_worked_examples() -> None:
    """The reference keeps its worked examples."""
    assert len(EXAMPLES) >= 5

"""Duration strings at the edges: 500ms, 5s, 2m, 1h30m."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.common.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("5s", timedelta(seconds=5)),
        ("2m", timedelta(minutes=2)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5s", timedelta(milliseconds=1500)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    """Each accepted spelling parses to the exact timedelta."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5x", "s5", "5s junk", "-5s"])
def test_parse_refuses_with_the_accepted_form(text: str) -> None:
    """Malformed durations raise ValueError saying how to write one."""
    with pytest.raises(ValueError, match="write it like"):
        parse_duration(text)


@pytest.mark.parametrize(
    "value",
    [timedelta(milliseconds=250), timedelta(seconds=5), timedelta(minutes=2), timedelta(hours=3)],
)
def test_format_round_trips(value: timedelta) -> None:
    """format_duration produces a string parse_duration reads back exactly."""
    assert parse_duration(format_duration(value)) == value

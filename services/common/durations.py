"""Durations are `timedelta` inside and strings like `500ms`, `5s`, `2m`, `1h` at the edges."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}


def parse_duration(text: str) -> timedelta:
    """Parse `500ms`, `5s`, `2m`, `1h30m`; raise ValueError with the accepted form otherwise."""
    compact = text.strip().replace(" ", "")
    if not compact:
        raise ValueError("empty duration; write it like 500ms, 5s, 2m or 1h")
    total = timedelta()
    position = 0
    for match in _PART.finditer(compact):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(f"invalid duration {text!r}; write it like 500ms, 5s, 2m or 1h")
    return total


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling of a duration in the units parse_duration accepts."""
    ms = round(value.total_seconds() * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"

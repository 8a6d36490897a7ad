"""How values read in tables and messages: times, durations, sizes, counted nouns."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from rich.cells import cell_len

_IRREGULAR = {"was": "were", "is": "are"}


def plural(count: int, noun: str, plural_form: str = "") -> str:
    """`1 session`, `2 sessions`, `0 sessions` (give `plural_form` when adding s is wrong)."""
    if count == 1:
        return f"{count:,} {noun}"
    return f"{count:,} {plural_form or _IRREGULAR.get(noun) or noun + 's'}"


def is_unset(value: Timestamp) -> bool:
    return value.seconds == 0 and value.nanos == 0


def timestamp_text(value: Timestamp) -> str:
    if is_unset(value):
        return "-"
    return value.ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def timestamp_value(value: Timestamp) -> str:
    """RFC 3339 in UTC for CSV (the JSON spelling), empty when unset."""
    return "" if is_unset(value) else value.ToJsonString()


def short_time_text(value: Timestamp) -> str:
    if is_unset(value):
        return "-"
    local = value.ToDatetime(tzinfo=UTC).astimezone()
    same_day = local.date() == datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M")


def age_text(value: Timestamp, *, now: datetime | None = None) -> str:
    if is_unset(value):
        return "-"
    seconds = ((now or datetime.now(UTC)) - value.ToDatetime(tzinfo=UTC)).total_seconds()
    if seconds < 120:
        return f"{max(seconds, 0):.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def ms_text(value: float) -> str:
    return f"{value / 1000:.2f}s" if value >= 10_000 else f"{value:.0f}ms"


def bytes_text(value: float) -> str:
    for unit, size in (("MB", 1_000_000), ("KB", 1_000)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def metric_text(name: str, value: float) -> str:
    """A measurement as people read it: durations in ms/s, CLS unitless, bytes in KB/MB."""
    if name.endswith("_ms"):
        return ms_text(value)
    if name == "cls":
        return f"{value:.3f}"
    if name == "bytes":
        return bytes_text(value)
    return f"{value:.0f}"


def human_duration(value: timedelta) -> str:
    """A duration as people write it, compound and rounded: `9m59s`, `2h30m`, `1d6h`, `450ms`.

    Exact below a second; whole seconds below an hour; minutes below a day, hours above. The
    result parses back with parse_duration.
    """
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    if total_ms < 1000:
        return f"{total_ms}ms"
    if total_ms < 10_000 and total_ms % 1000:
        return f"{total_ms / 1000:g}s"
    seconds = round(total_ms / 1000)
    units = (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))
    smallest = "s" if seconds < 3600 else "m" if seconds < 86_400 else "h"
    parts: list[str] = []
    for unit, size in units:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
        if unit == smallest:
            break
    return "".join(parts) or "0s"


# Long words (URLs, paths) break after these characters before they are cut anywhere.
_BREAK_AFTER = re.compile(r"(?<=[/?&=,;:.-])")


def _pieces(word: str, width: int) -> list[str]:
    """A word too long for the column, in pieces of at most `width`, split after / ? & = …"""
    pieces: list[str] = []
    current = ""
    for part in (p for p in _BREAK_AFTER.split(word) if p):
        while cell_len(part) > width:  # no separator close enough: split where it must
            room = width - cell_len(current)
            if room <= 0:
                pieces.append(current)
                current, room = "", width
            current, part = current + part[:room], part[room:]
        if cell_len(current) + cell_len(part) > width:
            pieces.append(current)
            current = ""
        current += part
    if current:
        pieces.append(current)
    return pieces


def wrap_text(text: str, width: int) -> list[str]:
    """The text in lines of at most `width`: at spaces, then inside long words; never cut."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for word in paragraph.split():
            gap = " " if current else ""
            if cell_len(current) + len(gap) + cell_len(word) <= width:
                current += gap + word
                continue
            if cell_len(word) <= width:
                lines.append(current)
                current = word
                continue
            pieces = _pieces(word, width)
            if current and cell_len(current) + 1 + cell_len(pieces[0]) <= width:
                current += " " + pieces.pop(0)
            if current:
                lines.append(current)
            lines.extend(pieces[:-1])
            current = pieces[-1]
        lines.append(current)
    return lines

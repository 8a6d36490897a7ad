"""The hand-written time conversions in contracts agree with protobuf's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.contracts import duration, from_duration, from_timestamp, timestamp

MOMENTS = [
    datetime(2026, 11, 24, 13, 50, 42, 123456, tzinfo=UTC),
    datetime(2026, 11, 24, 15, 50, 42, 999999, tzinfo=timezone(timedelta(hours=2))),
    datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    datetime(1900, 3, 1, 12, 0, 0, 7, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
]
SPANS = [
    timedelta(0),
    timedelta(seconds=30),
    timedelta(milliseconds=1500),
    timedelta(microseconds=-1),
    timedelta(seconds=-2, microseconds=250_000),
    timedelta(days=3, microseconds=999_999),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_timestamps_match_protobuf(moment: datetime) -> None:
    """timestamp/from_timestamp give what FromDatetime/ToDatetime give, both ways."""
    reference = Timestamp()
    reference.FromDatetime(moment.astimezone(UTC))
    assert timestamp(moment) == reference
    back = from_timestamp(reference)
    assert back == reference.ToDatetime(tzinfo=UTC) == moment
    assert back is not None and back.tzinfo is UTC


def test_unset_timestamp_is_none() -> None:
    """An unset timestamp reads as None, and None writes an unset one."""
    assert from_timestamp(Timestamp()) is None
    assert timestamp(None) == Timestamp()


@pytest.mark.parametrize("span", SPANS, ids=str)
def test_durations_match_protobuf(span: timedelta) -> None:
    """duration/from_duration give what FromTimedelta/ToTimedelta give, negative ones included."""
    reference = Duration()
    reference.FromTimedelta(span)
    assert duration(span) == reference
    assert from_duration(reference) == reference.ToTimedelta() == span
    odd = Duration(seconds=-1, nanos=-1500)  # sub-microsecond nanos round toward zero
    assert from_duration(odd) == odd.ToTimedelta()

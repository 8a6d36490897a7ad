"""Timestamps and durations to and from their protobuf messages, fast."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

# The four conversions below run several times per job; they do what Timestamp.FromDatetime,
# ToDatetime, Duration.FromTimedelta and ToTimedelta do, in a fraction of their time.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NANOS = 1_000_000_000


def timestamp(value: datetime | None) -> Timestamp:
    if value is None:
        return Timestamp()
    since = value.astimezone(UTC) - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def from_timestamp(message: Timestamp) -> datetime | None:
    seconds, nanos = message.seconds, message.nanos
    if seconds == 0 and nanos == 0:
        return None
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def duration(value: timedelta) -> Duration:
    seconds, nanos = value.days * 86_400 + value.seconds, value.microseconds * 1000
    if seconds < 0 and nanos > 0:  # both carry the sign, as the Duration message requires
        seconds, nanos = seconds + 1, nanos - _NANOS
    return Duration(seconds=seconds, nanos=nanos)


def from_duration(message: Duration) -> timedelta:
    nanos = message.nanos
    micros = nanos // 1000 if nanos >= 0 else -(-nanos // 1000)  # toward zero
    return timedelta(seconds=message.seconds, microseconds=micros)

"""Protobuf adapters: specs, results and envelopes survive the round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common.contracts import (
    envelope_from_bytes,
    envelope_to_bytes,
    result_from_pb,
    result_to_pb,
)
from services.common.types import ErrorClass, JobEnvelope, NavigationTiming, Outcome, SessionResult
from services.scheduler._convert import spec_data_from_pb, spec_to_pb
from services.scheduler._spec import validate_spec
from smartfleet.v1 import results_pb2


def test_spec_round_trip() -> None:
    """A validated spec converts to protobuf and back unchanged."""
    spec = validate_spec(
        {
            "name": "smoke",
            "targets": ["http://127.0.0.1/a", "http://127.0.0.1/b"],
            "sessions": 42,
            "limits": {"max_concurrency": 3, "session_timeout": timedelta(seconds=7)},
            "priority": 5,
            "seed": 9,
        },
        allowed_hosts=[],
    )
    assert validate_spec(spec_data_from_pb(spec_to_pb(spec)), allowed_hosts=[]) == spec


def test_envelope_round_trip() -> None:
    """A job envelope survives serialisation on the bus."""
    envelope = JobEnvelope(
        job_id="r-1",
        attempt=2,
        run_id="r",
        index=1,
        target_url="http://127.0.0.1/",
        engine="chromium",
        session_timeout=timedelta(seconds=30),
        deadline=datetime(2026, 1, 1, tzinfo=UTC),
        allowed_hosts=("example.com",),
    )
    assert envelope_from_bytes(envelope_to_bytes(envelope)) == envelope


def test_result_round_trip() -> None:
    """A session result with timings and a redirect chain survives the node link."""
    now = datetime.now(UTC)
    result = SessionResult(
        job_id="r-1",
        attempt=1,
        run_id="r",
        index=1,
        outcome=Outcome.HTTP_ERROR,
        error_class=ErrorClass.TRANSIENT,
        started_at=now - timedelta(seconds=1),
        finished_at=now,
        duration_ms=1000.0,
        http_status=500,
        redirect_chain=("http://127.0.0.1/a", "http://127.0.0.1/b"),
        timing=NavigationTiming(ttfb_ms=12.5, load_ms=40.0),
    )
    assert result_from_pb(result_to_pb(result)) == result


def test_unknown_outcome_is_a_value_error() -> None:
    """An outcome number from a newer node is refused, not mis-stored."""
    message = results_pb2.SessionResult(job_id="j", attempt=1, outcome=99)  # type: ignore[arg-type]
    try:
        result_from_pb(message)
    except ValueError as error:
        assert "unknown outcome" in str(error)
    else:
        raise AssertionError("expected ValueError")

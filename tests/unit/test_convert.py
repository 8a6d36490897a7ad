"""Protobuf adapters: specs, results and envelopes survive the round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common.contracts import (
    envelope_from_bytes,
    envelope_to_bytes,
    result_from_pb,
    result_to_pb,
    spec_data_from_pb,
    spec_to_pb,
)
from services.common.spec import validate_spec
from services.common.types import (
    ErrorClass,
    JobEnvelope,
    NavigationTiming,
    Outcome,
    SessionResult,
    WebVitals,
)
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
    """A session result with timings, vitals, traffic, console errors and redirects survives."""
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
        vitals=WebVitals(ttfb_ms=12.5, fcp_ms=30.0, lcp_ms=35.5, cls=0.125),
        bytes_transferred=12_345,
        request_count=7,
        console_errors=("demo error", "Error: boom"),
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


def test_envelope_with_steps_and_cell_round_trip() -> None:
    """Steps (assert included), the matrix cell and the account survive the bus."""
    from services.common.spec import parse_spec
    from services.common.types import Cell, Geolocation

    spec = parse_spec(
        {
            "targets": ["http://127.0.0.1/"],
            "sessions": 1,
            "steps": [
                {"goto": {"url": "{target}about"}},
                {"click": {"selector": "#go"}, "optional": True, "timeout": "2s"},
                {"assert": {"selector": "li", "count": 5}},
                {"dwell": {"min": "100ms", "max": "1s"}},
            ],
        }
    )
    envelope = JobEnvelope(
        job_id="r-1",
        attempt=1,
        run_id="r",
        index=1,
        target_url="http://127.0.0.1/",
        engine="chromium",
        session_timeout=timedelta(seconds=30),
        deadline=datetime(2026, 1, 1, tzinfo=UTC),
        steps=tuple(spec.steps),
        cell=Cell(
            device="Pixel 7",
            locale="de-DE",
            timezone="Europe/Berlin",
            geolocation=Geolocation(latitude=52.5, longitude=13.4),
            labels=(("region", "eu"),),
        ),
        account="alice",
        write_back_state=True,
        artifacts="on_failure",
        seed=7,
    )
    assert envelope_from_bytes(envelope_to_bytes(envelope)) == envelope


def test_result_with_extracted_data_round_trip() -> None:
    """Extracted strings and lists, step outcomes and the cell survive the node link."""
    from services.common.types import Cell, StepOutcome

    now = datetime.now(UTC)
    result = SessionResult(
        job_id="r-1",
        attempt=1,
        run_id="r",
        index=1,
        outcome=Outcome.OK,
        error_class=ErrorClass.NONE,
        started_at=now,
        finished_at=now,
        duration_ms=1.0,
        cell=Cell(device="Pixel 7"),
        extracted={"title": "Products", "skus": ["sku-1", "sku-2"]},
        steps=(StepOutcome(index=0, action="goto", status="ok", duration_ms=3.0),),
        account="alice",
        artifacts=("r/r-1/1/shot.png",),
    )
    assert result_from_pb(result_to_pb(result)) == result

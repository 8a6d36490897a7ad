"""The SessionResult codec keeps every field through its protobuf message and its database row."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from services.common.contracts import (
    cell_to_json,
    result_from_pb,
    result_from_row,
    result_to_pb,
    result_to_row,
)
from services.common.types import (
    Cell,
    ErrorClass,
    Geolocation,
    NavigationTiming,
    Outcome,
    SessionResult,
    StepOutcome,
    WebVitals,
)


def _full_result() -> SessionResult:
    """A result with every field set to something other than its default."""
    now = datetime(2026, 12, 1, 12, 0, 0, 123000, tzinfo=UTC)
    return SessionResult(
        job_id="run-1-0",
        attempt=2,
        run_id="run-1",
        index=7,
        outcome=Outcome.ASSERTION_FAILED,
        error_class=ErrorClass.PERMANENT,
        started_at=now,
        finished_at=now + timedelta(seconds=2),
        duration_ms=2000.5,
        node_id="node-a",
        engine="chromium",
        error="step 2 (assert): expected text 'Shop'",
        http_status=200,
        target_url="http://127.0.0.1:8080/",
        final_url="http://127.0.0.1:8080/about",
        redirect_chain=("http://127.0.0.1:8080/", "http://127.0.0.1:8080/about"),
        timing=NavigationTiming(
            dns_ms=1, connect_ms=2, ttfb_ms=3, dom_content_loaded_ms=4, load_ms=5
        ),
        browser_version="156.0",
        cell=Cell(
            device="Pixel 7",
            locale="de-DE",
            timezone="Europe/Berlin",
            geolocation=Geolocation(latitude=52.5, longitude=13.4, accuracy=10),
            engine="chromium",
            labels=(("region", "eu"),),
        ),
        extracted={"title": "Shop", "links": ["a", "b"]},
        steps=(StepOutcome(index=0, action="goto", status="ok", duration_ms=120.0),),
        account="alice",
        artifacts=("run-1/run-1-0/2/failure.png",),
        vitals=WebVitals(ttfb_ms=3, fcp_ms=6, lcp_ms=7, cls=0.1),
        bytes_transferred=4096,
        request_count=3,
        console_errors=("Uncaught TypeError",),
        stored_at=now + timedelta(seconds=2, milliseconds=3),
    )


def test_every_field_is_set_in_the_sample() -> None:
    """The sample result differs from the defaults in every field (so the round trips test them)."""
    default = SessionResult(
        job_id="",
        attempt=0,
        run_id="",
        index=0,
        outcome=Outcome.OK,
        error_class=ErrorClass.NONE,
        started_at=datetime.min.replace(tzinfo=UTC),
        finished_at=datetime.min.replace(tzinfo=UTC),
        duration_ms=0,
    )
    sample = _full_result()
    same = [
        f.name for f in fields(SessionResult) if getattr(sample, f.name) == getattr(default, f.name)
    ]
    assert same == []


def test_result_round_trips_through_protobuf() -> None:
    """result_from_pb(result_to_pb(r)) == r, field for field."""
    result = _full_result()
    assert result_from_pb(result_to_pb(result)) == result


def test_result_round_trips_through_its_row() -> None:
    """result_from_row(result_to_row(r)) == r: the row keeps every field a node reports."""
    result = _full_result()
    assert result.stored_at is not None
    stored_at = result.stored_at
    row = result_to_row(result, stored_at=stored_at)
    assert (row["cell_key"], row["stored_at"]) == (result.cell.key, stored_at)
    assert row["detail"]["cell"] == cell_to_json(result.cell)
    assert result_from_row(SimpleNamespace(**row)) == result

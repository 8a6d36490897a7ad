"""The result row the ingestor writes keeps every measurement a node reports."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import UTC, datetime

from services.common.types import (
    Cell,
    ErrorClass,
    NavigationTiming,
    Outcome,
    SessionResult,
    WebVitals,
)
from services.scheduler._dispatcher import cell_to_json
from services.scheduler._ingestor import _result_row


def test_result_row_detail_holds_all_timings_and_vitals() -> None:
    """The spelled-out timing and vitals dicts equal asdict(): a new field cannot go missing."""
    now = datetime.now(UTC)
    result = SessionResult(
        job_id="run-1-0",
        attempt=1,
        run_id="run-1",
        index=0,
        outcome=Outcome.OK,
        error_class=ErrorClass.NONE,
        started_at=now,
        finished_at=now,
        duration_ms=12.5,
        timing=NavigationTiming(
            dns_ms=1, connect_ms=2, ttfb_ms=3, dom_content_loaded_ms=4, load_ms=5
        ),
        vitals=WebVitals(ttfb_ms=3, fcp_ms=6, lcp_ms=7, cls=0.1),
        cell=Cell(device="Pixel 7", engine="chromium", labels=(("region", "eu"),)),
    )
    row = _result_row(result, stored_at=now)
    assert row["detail"]["timing"] == asdict(result.timing)  # type: ignore[index]
    assert row["detail"]["vitals"] == asdict(result.vitals)  # type: ignore[index]
    assert set(row["detail"]["timing"]) == {f.name for f in fields(NavigationTiming)}  # type: ignore[index]
    assert row["detail"]["cell"] == cell_to_json(result.cell)  # type: ignore[index]
    assert (row["cell_key"], row["stored_at"]) == (result.cell.key, now)

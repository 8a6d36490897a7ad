"""Run statistics helpers."""

from __future__ import annotations

from services.scheduler._runs import percentile


def test_percentile_nearest_rank() -> None:
    """p50 and p95 of 1..100 are 50 and 95; an empty list gives 0."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.95) == 7.0

"""Run statistics helpers."""

from __future__ import annotations

from services.scheduler._stats import METRICS, metric_stats, percentile


def test_percentile_nearest_rank() -> None:
    """p50 and p95 of 1..100 are 50 and 95; an empty list gives 0."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.95) == 7.0


def _detail(i: int) -> dict[str, object]:
    return {
        "timing": {"load_ms": 100.0 * i},
        "vitals": {"ttfb_ms": float(i), "fcp_ms": 10.0 * i, "lcp_ms": 20.0 * i, "cls": 0.0},
        "bytes_transferred": 1000 * i,
        "request_count": i,
    }


def test_metric_stats_percentiles_skip_unmeasured_results() -> None:
    """p50/p95/p99 per metric over 1..100; zeros (unmeasured) and old rows without them are skipped."""
    details = [_detail(i) for i in range(1, 101)]
    details += [_detail(0), {"timing": {}}, {}]  # a failed session and rows from before metrics
    stats = {metric.name: metric for metric in metric_stats(details)}
    assert list(stats) == list(METRICS)
    assert (stats["lcp_ms"].p50, stats["lcp_ms"].p95, stats["lcp_ms"].p99) == (1000, 1900, 1980)
    assert (stats["ttfb_ms"].p50, stats["ttfb_ms"].count) == (50, 100)
    assert (stats["load_ms"].p99, stats["bytes"].p95, stats["requests"].p50) == (9900, 95_000, 50)
    # CLS 0 is a real value wherever the page was measured, not where it was not.
    assert (stats["cls"].count, stats["cls"].p99) == (100, 0.0)
    assert metric_stats([{}, _detail(0)]) == []

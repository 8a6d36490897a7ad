"""Run sketches: 1 % accurate nearest-rank quantiles, exact merges, bytes that round-trip."""

from __future__ import annotations

import math
import random
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.thresholds import (
    METRIC_NAMES,
    CellSelector,
    VerdictStatus,
    evaluate,
    judge,
    parse_threshold,
    parse_threshold_rules,
)
from services.common.types import (
    Cell,
    ErrorClass,
    Geolocation,
    NavigationTiming,
    Outcome,
    SessionResult,
    WebVitals,
)
from services.scheduler._metric_sketch import RELATIVE_ACCURACY, MetricSketch
from services.scheduler._sketch_codec import SketchFormatError
from services.scheduler._sketches import RunSketches
from services.scheduler._stats import METRICS, metric_stats, percentile

# The bound of the issue; the tiny slack absorbs float rounding at a bin's edge.
BOUND = RELATIVE_ACCURACY * (1 + 1e-9)
QUANTILES = (0.5, 0.95, 0.99)
NOW = datetime(2026, 1, 1, tzinfo=UTC)

Distribution = Callable[[random.Random], float]
DISTRIBUTIONS: dict[str, Distribution] = {
    "uniform": lambda rnd: rnd.uniform(1, 10_000),
    "uniform_small": lambda rnd: rnd.uniform(0.0001, 0.5),
    "lognormal": lambda rnd: rnd.lognormvariate(6, 1.2),
    "pareto": lambda rnd: 10 * rnd.paretovariate(1.1),
    "cauchy_abs": lambda rnd: abs(100 * math.tan(math.pi * (rnd.random() - 0.5))) + 1e-6,
    "constant": lambda rnd: 1234.5,
    "integers": lambda rnd: float(rnd.randint(1, 60)),
    "with_zeros": lambda rnd: 0.0 if rnd.random() < 0.3 else rnd.expovariate(1 / 50),
    "bimodal": lambda rnd: rnd.gauss(100, 5) if rnd.random() < 0.9 else rnd.gauss(9_000, 50),
    "extremes": lambda rnd: rnd.choice([1e-9, 3e-9, 1.0, 5e12, 1e13]),
}


def _relative_error(estimate: float | None, exact: float) -> float:
    assert estimate is not None
    if exact == 0:
        return 0.0 if estimate == 0 else math.inf
    return abs(estimate - exact) / abs(exact)


@st.composite
def samples(draw: st.DrawFn) -> tuple[str, list[float]]:
    name = draw(st.sampled_from(sorted(DISTRIBUTIONS)))
    size = draw(st.sampled_from([1, 2, 3, 7, 10, 99, 100, 101, 1000, 5000]) | st.integers(1, 3000))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    return name, [max(0.0, DISTRIBUTIONS[name](rnd)) for _ in range(size)]


def _sketch(values: list[float]) -> MetricSketch:
    sketch = MetricSketch()
    for value in values:
        sketch.add(value)
    return sketch


def _result(
    rnd: random.Random, cell: Cell, *, outcome: Outcome = Outcome.OK, measured: bool = True
) -> SessionResult:
    vitals = WebVitals()
    if measured:
        vitals = WebVitals(
            ttfb_ms=rnd.lognormvariate(4, 1),
            fcp_ms=rnd.lognormvariate(5, 0.5),
            lcp_ms=rnd.choice([0.0, rnd.lognormvariate(6.5, 0.7)]),
            cls=rnd.choice([0.0, 0.0, rnd.random() / 3]),
        )
    return SessionResult(
        job_id=f"j{rnd.random()}",
        attempt=1,
        run_id="run",
        index=0,
        outcome=outcome,
        error_class=ErrorClass.NONE,
        started_at=NOW,
        finished_at=NOW,
        # A session that failed early may report no duration at all.
        duration_ms=rnd.lognormvariate(7, 1) if measured or rnd.random() < 0.5 else 0.0,
        cell=cell,
        vitals=vitals,
        timing=NavigationTiming(load_ms=rnd.lognormvariate(6, 1) if measured else 0.0),
        bytes_transferred=rnd.randint(1, 3_000_000) if measured else 0,
        request_count=rnd.randint(1, 120) if measured else 0,
    )


CELLS = [
    Cell(device="Pixel 7", locale="de-DE", timezone="Europe/Berlin"),
    Cell(device="Pixel 7", locale="en-US", engine="chromium"),
    Cell(device="Desktop Chrome", locale="en-US", labels=(("region", "eu"), ("tier", "a"))),
    Cell(engine="webkit", geolocation=Geolocation(latitude=52.5, longitude=13.4, accuracy=10)),
]


def _run(rnd: random.Random, size: int, cells: list[Cell] = CELLS) -> list[SessionResult]:
    outcomes = [Outcome.OK] * 8 + [Outcome.TIMEOUT, Outcome.NAVIGATION_ERROR]
    results = []
    for _ in range(size):
        outcome = rnd.choice(outcomes)
        results.append(
            _result(rnd, rnd.choice(cells), outcome=outcome, measured=outcome is Outcome.OK)
        )
    return results


# ----------------------------------------------------------------------------- accuracy


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples(), st.floats(0, 1))
def test_quantiles_within_one_percent_of_nearest_rank(
    sample: tuple[str, list[float]], q: float
) -> None:
    """p50/p95/p99 (and any q) are within 1 % of _runs.percentile over every distribution."""
    _, values = sample
    sketch = _sketch(values)
    exact = sorted(values)
    for quantile in (*QUANTILES, q):
        error = _relative_error(sketch.quantile(quantile), percentile(exact, quantile))
        assert error <= BOUND, (quantile, sketch.quantile(quantile), percentile(exact, quantile))
    assert sketch.count == len(values)
    assert sketch.lo == exact[0] and sketch.hi == exact[-1]
    assert sketch.mean == pytest.approx(sum(values) / len(values), rel=1e-9)


def test_large_run_quantiles() -> None:
    """At 200,000 heavy-tailed values the sketch holds a few hundred bins and stays within 1 %."""
    rnd = random.Random(7)
    values = [rnd.lognormvariate(7, 1.5) for _ in range(200_000)]
    sketch = _sketch(values)
    exact = sorted(values)
    for q in (0.001, 0.25, *QUANTILES, 0.999):
        assert _relative_error(sketch.quantile(q), percentile(exact, q)) <= BOUND
    assert len(sketch.store.bins) < 2_000


def test_values_beyond_the_range_share_the_edge_bins() -> None:
    """Below 1e-9 or above 1e13 values share an edge bin: bins stay bounded, min and max exact."""
    values = [1e-300, 1e-12, 1.0, 2.0, 1e15, 1e300]
    sketch = _sketch(values)
    assert len(sketch.store.bins) <= 3_000
    assert (sketch.lo, sketch.hi) == (1e-300, 1e300)
    assert sketch.quantile(0.5) == pytest.approx(1.0, rel=RELATIVE_ACCURACY)
    assert sketch.quantile(0.0) == 1e-300 and sketch.quantile(1.0) == 1e300


def test_empty_and_edges() -> None:
    """No values: None; one value: itself at every q; zeros are exact."""
    assert MetricSketch().quantile(0.5) is None
    assert MetricSketch().mean is None
    one = _sketch([42.0])
    assert [one.quantile(q) for q in (0.0, 0.5, 1.0)] == [42.0, 42.0, 42.0]
    zeros = _sketch([0.0] * 10 + [5.0] * 10)
    assert zeros.quantile(0.5) == 0.0
    assert zeros.quantile(0.51) == pytest.approx(5.0, rel=RELATIVE_ACCURACY)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples(), st.integers(2, 8), st.integers(0, 2**32))
def test_merge_of_parts_equals_sketch_of_all(
    sample: tuple[str, list[float]], parts: int, seed: int
) -> None:
    """Sketches of random parts, merged, give the quantiles of one sketch of all values."""
    _, values = sample
    rnd = random.Random(seed)
    pieces: list[list[float]] = [[] for _ in range(parts)]
    for value in values:
        rnd.choice(pieces).append(value)
    merged = MetricSketch()
    for piece in pieces:
        merged.merge(_sketch(piece))
    whole, exact = _sketch(values), sorted(values)
    for q in QUANTILES:
        assert merged.quantile(q) == whole.quantile(q)
        assert _relative_error(merged.quantile(q), percentile(exact, q)) <= BOUND
    assert (merged.count, merged.zeros, merged.lo, merged.hi) == (
        whole.count,
        whole.zeros,
        whole.lo,
        whole.hi,
    )


# ----------------------------------------------------------------------------- run sketches


def _details(result: SessionResult) -> dict[str, Any]:
    """A result's detail JSON as the scheduler stores it, laid out by _runs.METRICS paths."""
    values = {
        "ttfb_ms": result.vitals.ttfb_ms,
        "fcp_ms": result.vitals.fcp_ms,
        "lcp_ms": result.vitals.lcp_ms,
        "cls": result.vitals.cls,
        "load_ms": result.timing.load_ms,
        "bytes": result.bytes_transferred,
        "requests": result.request_count,
    }
    detail: dict[str, Any] = {}
    for name, path in METRICS.items():
        node = detail
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = values[name]
    return detail


def test_metric_names_are_those_of_run_stats() -> None:
    """The sketches keep duration_ms and every metric _runs.metric_stats reports, in order."""
    assert METRIC_NAMES == ("duration_ms", *METRICS)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 1500), st.integers(0, 2**32))
def test_add_follows_todays_measurement_rule(size: int, seed: int) -> None:
    """Per metric, the sketches count what metric_stats counts and agree within 1 % on p50/p95/p99."""
    results = _run(random.Random(seed), size)
    sketches = RunSketches()
    sketches.add_all(results)
    for stats in metric_stats(_details(result) for result in results):
        assert sketches.count(stats.name) == stats.count
        for q, exact in zip(QUANTILES, (stats.p50, stats.p95, stats.p99), strict=True):
            assert _relative_error(sketches.quantile(stats.name, q), exact) <= BOUND
    durations = sorted(result.duration_ms for result in results)
    assert sketches.count("duration_ms") == len(results)
    for q in QUANTILES:
        assert (
            _relative_error(sketches.quantile("duration_ms", q), percentile(durations, q)) <= BOUND
        )
    assert sketches.max("duration_ms") == durations[-1]


def test_cls_counts_where_the_document_was_measured() -> None:
    """CLS 0 counts when TTFB or FCP was measured, not when the page never answered."""
    rnd = random.Random(1)
    stable = _result(rnd, CELLS[0])
    stable = SessionResult(**{**_fields(stable), "vitals": WebVitals(ttfb_ms=20.0, cls=0.0)})
    failed = SessionResult(**{**_fields(stable), "vitals": WebVitals(), "duration_ms": 0.0})
    sketches = RunSketches()
    sketches.add_all([stable, failed])
    assert sketches.count("cls") == 1
    assert sketches.count("ttfb_ms") == 1
    assert sketches.count("lcp_ms") == 0
    assert sketches.quantile("lcp_ms", 0.5) is None
    assert sketches.count("duration_ms") == 2
    assert sketches.min("duration_ms") == 0.0


def _fields(result: SessionResult) -> dict[str, Any]:
    return {name: getattr(result, name) for name in SessionResult.__dataclass_fields__}


def test_cells_and_selectors() -> None:
    """Reads by Cell, by selector (merged over the cells it matches) and for the whole run."""
    rnd = random.Random(3)
    results = _run(rnd, 3000)
    sketches = RunSketches()
    sketches.add_all(results)
    assert set(sketches.cells()) == {result.cell for result in results}
    pixel = CellSelector.of({"device": "Pixel 7"})
    in_pixel = [r for r in results if pixel.matches(r.cell)]
    assert sketches.results(cell=pixel) == len(in_pixel)
    assert sketches.results() == len(results)
    assert sum(sketches.outcomes().values()) == len(results)
    assert sketches.outcomes(cell=CELLS[2]) == _outcomes([r for r in results if r.cell == CELLS[2]])
    exact = sorted(r.duration_ms for r in in_pixel)
    for q in QUANTILES:
        estimate = sketches.quantile("duration_ms", q, cell=pixel)
        assert _relative_error(estimate, percentile(exact, q)) <= BOUND
    assert sketches.mean("duration_ms", cell=pixel) == pytest.approx(sum(exact) / len(exact))
    assert sketches.min("duration_ms", cell=pixel) == exact[0]
    assert sketches.max("duration_ms", cell=pixel) == exact[-1]
    nowhere = CellSelector.of({"device": "Pixel 5"})
    assert sketches.outcomes(cell=nowhere) == {}
    assert sketches.count("lcp_ms", cell=nowhere) == 0
    assert sketches.quantile("lcp_ms", 0.5, cell=nowhere) is None
    assert sketches.max("lcp_ms", cell=nowhere) is None
    with pytest.raises(ValueError, match="unknown metric 'lcp'"):
        sketches.quantile("lcp", 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        sketches.quantile("lcp_ms", 95)


def _outcomes(results: list[SessionResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
    return counts


def test_reads_see_results_added_after_a_cached_read() -> None:
    """A merged read is cached, and the next add is seen by the next read."""
    rnd = random.Random(4)
    sketches = RunSketches()
    sketches.add_all(_run(rnd, 200))
    before = sketches.count("duration_ms")
    assert sketches.count("duration_ms") == before
    sketches.add(_result(rnd, CELLS[0]))
    assert sketches.count("duration_ms") == before + 1
    other = RunSketches()
    other.add_all(_run(rnd, 50))
    sketches.merge(other)
    assert sketches.count("duration_ms") == before + 51


def test_run_merge_equals_one_run() -> None:
    """RunSketches of partitions, merged, read like the sketches of every result."""
    results = _run(random.Random(5), 2000)
    whole, left, right = RunSketches(), RunSketches(), RunSketches()
    whole.add_all(results)
    left.add_all(results[:700])
    right.add_all(results[700:])
    left.merge(right)
    assert set(left.cells()) == set(whole.cells())
    assert left.outcomes() == whole.outcomes()
    for metric in METRIC_NAMES:
        assert left.count(metric) == whole.count(metric)
        for q in QUANTILES:
            assert left.quantile(metric, q) == whole.quantile(metric, q)
            for cell in whole.cells():
                assert left.quantile(metric, q, cell=cell) == whole.quantile(metric, q, cell=cell)


def test_thresholds_evaluate_against_sketches() -> None:
    """RunSketches is the Figures of thresholds: rates, counts, percentiles, cell scopes."""
    rnd = random.Random(6)
    results = _run(rnd, 1000)
    sketches = RunSketches()
    sketches.add_all(results)
    ok = sum(r.outcome is Outcome.OK for r in results)
    rate = evaluate(parse_threshold("rate(ok) >= 0.99"), sketches)
    assert rate.passed is False and rate.value == ok / len(results)
    timeouts = sum(r.outcome is Outcome.TIMEOUT for r in results)
    count = evaluate(parse_threshold(f'count(outcome == "timeout") < {timeouts}'), sketches)
    assert count.passed is False and count.settled and count.value == timeouts
    durations = sorted(r.duration_ms for r in results if r.cell.device == "Pixel 7")
    scoped = evaluate(parse_threshold('cell(device="Pixel 7"): p95(duration_ms) < 1e9'), sketches)
    assert scoped.passed is True
    assert _relative_error(scoped.value, percentile(durations, 0.95)) <= BOUND
    verdict = judge(
        parse_threshold_rules(["p99(duration_ms) < 1e9", "max(cls) <= 1"]), sketches, final=True
    )
    assert verdict.status is VerdictStatus.PASSED


# ----------------------------------------------------------------------------- bytes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 800), st.integers(0, 2**32), st.integers(1, 4))
def test_bytes_round_trip(size: int, seed: int, cells: int) -> None:
    """from_bytes(to_bytes(s)) reads the same in every figure and writes the same bytes again."""
    sketches = RunSketches()
    sketches.add_all(_run(random.Random(seed), size, CELLS[:cells]))
    data = sketches.to_bytes()
    assert data[0] == 1
    back = RunSketches.from_bytes(data)
    assert back.to_bytes() == data
    assert back.cells() == sketches.cells()
    for cell in (None, *sketches.cells()):
        assert back.outcomes(cell=cell) == sketches.outcomes(cell=cell)
        for metric in METRIC_NAMES:
            assert back.count(metric, cell=cell) == sketches.count(metric, cell=cell)
            assert back.mean(metric, cell=cell) == sketches.mean(metric, cell=cell)
            assert back.min(metric, cell=cell) == sketches.min(metric, cell=cell)
            assert back.max(metric, cell=cell) == sketches.max(metric, cell=cell)
            for q in QUANTILES:
                assert back.quantile(metric, q, cell=cell) == sketches.quantile(
                    metric, q, cell=cell
                )


def test_decoded_sketches_keep_growing() -> None:
    """Results added after a round trip land as they would have without it."""
    rnd = random.Random(8)
    first, second = _run(rnd, 300), _run(rnd, 300)
    direct = RunSketches()
    direct.add_all(first + second)
    revived = RunSketches.from_bytes(_added(first).to_bytes())
    revived.add_all(second)
    for metric in METRIC_NAMES:
        for q in QUANTILES:
            assert revived.quantile(metric, q) == direct.quantile(metric, q)
    assert revived.outcomes() == direct.outcomes()


def _added(results: list[SessionResult]) -> RunSketches:
    sketches = RunSketches()
    sketches.add_all(results)
    return sketches


def test_empty_run_bytes() -> None:
    """An empty run is a few bytes and reads back empty."""
    data = RunSketches().to_bytes()
    assert len(data) < 100
    back = RunSketches.from_bytes(data)
    assert back.cells() == () and back.outcomes() == {} and back.count("cls") == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_a_format_error(data: bytes) -> None:
    """Arbitrary bytes never decode to something, and never raise anything but SketchFormatError."""
    for candidate in (data, b"\x01\x00" + data, b"\x01\x01" + zlib.compress(data)):
        try:
            decoded = RunSketches.from_bytes(candidate)
        except SketchFormatError:
            continue
        # Bytes that do decode make a consistent run: it encodes and decodes again.
        assert RunSketches.from_bytes(decoded.to_bytes()).outcomes() == decoded.outcomes()


def test_truncated_and_altered_bytes_are_refused() -> None:
    """Every truncation of valid bytes, an unknown version and unknown flags are format errors."""
    sketches = _added(_run(random.Random(9), 20, CELLS[:2]))
    raw = b"\x01\x00" + zlib.decompress(sketches.to_bytes()[2:])
    # Every cut inside the header and the first cell, then a spread over the rest.
    for end in sorted({*range(300), *range(300, len(raw) - 1, 17)}):
        with pytest.raises(SketchFormatError):
            RunSketches.from_bytes(raw[:end])
    with pytest.raises(SketchFormatError, match="version 2 is unknown"):
        RunSketches.from_bytes(b"\x02" + raw[1:])
    with pytest.raises(SketchFormatError, match="unknown sketch flags"):
        RunSketches.from_bytes(b"\x01\x04" + raw[2:])
    with pytest.raises(SketchFormatError, match="relative accuracy"):
        RunSketches.from_bytes(b"\x01\x00" + struct.pack("<d", 0.02) + raw[10:])
    with pytest.raises(SketchFormatError, match="after the last cell"):
        RunSketches.from_bytes(raw + b"\x00")
    bomb = b"\x01\x01" + zlib.compress(bytes(65 << 20), 1)
    with pytest.raises(SketchFormatError, match="too large"):
        RunSketches.from_bytes(bomb)

"""Micro-benchmark of run sketches: add() per result, bytes per run, encode/decode and read cost.

    python -m bench._sketches [--results 100000]

Not part of the tests (timings are noisy on a shared machine); prints a table.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime

from services.common.thresholds import METRIC_NAMES
from services.common.types import (
    Cell,
    ErrorClass,
    NavigationTiming,
    Outcome,
    SessionResult,
    WebVitals,
)
from services.scheduler._metric_sketch import MetricSketch
from services.scheduler._sketches import RunSketches

_NOW = datetime(2026, 1, 1, tzinfo=UTC)
_DEVICES = ["Pixel 7", "iPhone 13", "Desktop Chrome", "Galaxy S9+", "iPad Mini"]
_LOCALES = ["de-DE", "en-US", "fr-FR", "ja-JP", "pt-BR"]
_ENGINES = ["chromium", "firefox", "webkit", "chromium"]


def cells(count: int) -> list[Cell]:
    every = [
        Cell(device=device, locale=locale, engine=engine, labels=(("slot", str(slot)),))
        for slot in range(count)
        for device in _DEVICES
        for locale in _LOCALES
        for engine in _ENGINES
    ]
    return every[:count]


def results(count: int, *, cell_count: int, seed: int = 1) -> list[SessionResult]:
    """Results with every metric measured (the costly case for add)."""
    rnd, pool = random.Random(seed), cells(cell_count)
    made = []
    for index in range(count):
        made.append(
            SessionResult(
                job_id=str(index),
                attempt=1,
                run_id="bench",
                index=index,
                outcome=Outcome.OK if rnd.random() < 0.97 else Outcome.TIMEOUT,
                error_class=ErrorClass.NONE,
                started_at=_NOW,
                finished_at=_NOW,
                duration_ms=rnd.lognormvariate(7, 0.8),
                cell=pool[index % len(pool)],
                vitals=WebVitals(
                    ttfb_ms=rnd.lognormvariate(4, 0.8),
                    fcp_ms=rnd.lognormvariate(5.5, 0.5),
                    lcp_ms=rnd.lognormvariate(6.5, 0.6),
                    cls=rnd.choice([0.0, rnd.random() / 4]),
                ),
                timing=NavigationTiming(load_ms=rnd.lognormvariate(6.5, 0.7)),
                bytes_transferred=int(rnd.lognormvariate(13, 1)),
                request_count=rnd.randint(5, 120),
            )
        )
    return made


def _best(seconds: list[float]) -> float:
    return min(seconds)


def metric_add_us(values: int = 200_000) -> float:
    rnd = random.Random(2)
    data = [rnd.lognormvariate(7, 1) for _ in range(values)]
    runs = []
    for _ in range(3):
        sketch = MetricSketch()
        started = time.perf_counter()
        for value in data:
            sketch.add(value)
        runs.append(time.perf_counter() - started)
    return _best(runs) / values * 1e6


def _read_all_ms(sketches: RunSketches) -> float:
    """p50/p95/p99 of every metric over the whole run, as GetRunStats reads them."""
    started = time.perf_counter()
    for metric in METRIC_NAMES:
        for q in (0.5, 0.95, 0.99):
            sketches.quantile(metric, q)
    return (time.perf_counter() - started) * 1000


def measure(result_count: int, cell_count: int) -> dict[str, float]:
    batch = results(result_count, cell_count=cell_count)
    add_runs = []
    for _ in range(3):
        sketches = RunSketches()
        started = time.perf_counter()
        for result in batch:
            sketches.add(result)
        add_runs.append(time.perf_counter() - started)
    started = time.perf_counter()
    data = sketches.to_bytes()
    encode_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    RunSketches.from_bytes(data)
    decode_ms = (time.perf_counter() - started) * 1000
    fresh = RunSketches.from_bytes(data)
    read_ms = _read_all_ms(fresh)  # merges the cells of each metric once, then caches
    cached_ms = _read_all_ms(fresh)
    return {
        "add_us": _best(add_runs) / result_count * 1e6,
        "bytes": len(data),
        "encode_ms": encode_ms,
        "decode_ms": decode_ms,
        "read_ms": read_ms,
        "cached_ms": cached_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=100_000)
    args = parser.parse_args()
    print(f"MetricSketch.add: {metric_add_us():.2f} µs per value\n")
    print(
        f"{'cells':>5} {'results':>8} {'add µs/result':>14} {'bytes':>9} {'encode ms':>10} "
        f"{'decode ms':>10} {'24 reads ms':>12} {'cached ms':>10}"
    )
    for cell_count in (1, 10, 100):
        for result_count in sorted({1_000, args.results}):
            row = measure(result_count, cell_count)
            print(
                f"{cell_count:>5} {result_count:>8} {row['add_us']:>14.2f} {row['bytes']:>9,} "
                f"{row['encode_ms']:>10.1f} {row['decode_ms']:>10.1f} {row['read_ms']:>12.2f} "
                f"{row['cached_ms']:>10.2f}"
            )
    print("\n24 reads: p50/p95/p99 of the 8 metrics over the whole run (cells merged on read).")


if __name__ == "__main__":
    main()

"""`python -m bench.run [--quick]`: start a local stack and a demo site, measure, print a table,
write bench/results/latest.md and latest.json. Ratios compare against baselines of the same run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from bench import _gateway, _pacing, _scale, _throughput
from bench._fleet import Fleet, spec
from bench._report import Row, table, write
from cli._stack import Stack
from demo import DemoSite
from services.common.nats_server import find_nats_server

RESULTS = Path(__file__).resolve().parent / "results"


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def _nats_version() -> str:
    done = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True)
    return done.stdout.strip().removeprefix("nats-server: ")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def measure(quick: bool) -> tuple[list[Row], dict[str, Any], dict[str, Any]]:
    n, slots = (24, 4) if quick else (120, 4)
    cold_n = 8 if quick else 24
    pace_n, pace_window = (20, 10) if quick else (60, 30)
    get_clients, get_seconds = (200, 3.0) if quick else (200, 10.0)
    watchers, fanout_sessions = 150, (12 if quick else 40)
    million = 100_000 if quick else 1_000_000
    details: dict[str, Any] = {"quick": quick, "sessions": n, "slots": slots}

    with DemoSite() as site, tempfile.TemporaryDirectory(prefix="smartfleet-bench-") as tmp:
        url = f"{site.url}/about"
        say(f"starting the stack (node slots {slots}) and the demo site at {site.url}")
        async with (
            Stack(
                data_dir=Path(tmp) / "stack",
                gateway_port=0,
                scheduler_port=0,
                node_slots=slots,
                env={"SMARTFLEET_LOG_LEVEL": "WARNING"},
            ) as stack,
            Fleet(stack.gateway_addr, stack.token) as fleet,
            async_playwright() as pw,
        ):
            pids = stack.info.pids
            warm, _ = await fleet.run_to_end(
                spec("bench-warmup", [url], 2 * slots, concurrency=slots)
            )
            say(f"warm-up run: {warm.counters.succeeded}/{2 * slots} ok")

            say(f"plain Playwright, one warm browser: {n} sessions at concurrency {slots}")
            base = await _throughput.warm_loop(pw, url, n=n, concurrency=slots)
            say(f"  {base.per_s:.2f} sessions/s")
            say(f"Smartfleet: {n} sessions, max_concurrency {slots}")
            ours, final = await _throughput.fleet_run(
                fleet, url, n=n, concurrency=slots, node_pid=pids["node"]
            )
            say(
                f"  {ours.per_s:.2f} sessions/s ({final.counters.succeeded} ok, "
                f"{final.counters.failed} failed); node tree RSS {ours.rss_mb:.0f} MB"
            )
            say(f"browser per session: {cold_n} sessions at concurrency {slots}")
            cold = await _throughput.cold_loop(pw, url, n=cold_n, concurrency=slots)
            say(f"  {cold.per_s:.2f} sessions/s; browsers RSS {cold.rss_mb:.0f} MB")
            details["throughput"] = {
                "playwright_warm_per_s": base.per_s,
                "smartfleet_per_s": ours.per_s,
                "browser_per_session_per_s": cold.per_s,
                "smartfleet_succeeded": final.counters.succeeded,
                "smartfleet_failed": final.counters.failed,
                "node_tree_rss_mb_median": ours.rss_mb,
                "cold_tree_rss_mb_median": cold.rss_mb,
            }
            browser = await _throughput.launch(pw)
            chromium_version = browser.version
            await browser.close()

            say(f"window pacing: {pace_n} sessions over {pace_window}s")
            errors, paced = await _pacing.pacing_errors_ms(
                fleet, url, sessions=pace_n, window_s=pace_window
            )
            say(f"  p99 start error {p99(errors):.0f} ms over {len(errors)} results")
            details["pacing"] = {
                "results": len(errors),
                "max_ms": max(errors),
                "p50_ms": sorted(errors)[len(errors) // 2],
            }

            say(f"GetRun: {get_clients} concurrent clients for {get_seconds:.0f}s")
            latencies = await _gateway.getrun_latencies_ms(
                fleet, paced.id, clients=get_clients, seconds=get_seconds
            )
            say(f"  p99 {p99(latencies):.1f} ms over {len(latencies)} calls")
            details["getrun"] = {
                "calls": len(latencies),
                "calls_per_s": len(latencies) / get_seconds,
                "p50_ms": sorted(latencies)[len(latencies) // 2],
            }

            say(f"WatchRun fan-out: {watchers} streams on a {fanout_sessions}-session run")
            saw, updates = await _gateway.watch_fanout(
                fleet, url, watchers=watchers, sessions=fanout_sessions
            )
            say(f"  {saw}/{watchers} saw the completed update ({updates} updates delivered)")
            details["fanout"] = {"watchers": watchers, "updates": updates}

            say(f"CreateRun of {million:,} sessions")
            created_s, rss_before, rss_after = await _scale.create_million(
                fleet, url, scheduler_pid=pids["scheduler"], sessions=million
            )
            say(f"  {created_s:.2f} s; scheduler RSS {rss_before:.0f} → {rss_after:.0f} MB")
            details["scale"] = {"sessions": million, "scheduler_rss_before_mb": rss_before}
            say("stopping the stack")

    million_note = "" if million == 1_000_000 else f"--quick: {million:,} sessions"
    rows = [
        Row(
            "node_vs_playwright_ratio",
            ours.per_s / base.per_s,
            ">= 0.90",
            note=f"{n} sessions on /about, concurrency {slots}; vs one warm browser in-process",
        ),
        Row(
            "warm_vs_cold_ratio",
            ours.per_s / cold.per_s,
            "report",
            note="vs a browser launched per session, same concurrency (expect > 1.5)",
        ),
        Row(
            "memory_per_session_mb",
            ours.rss_mb / slots,
            "report",
            "MB",
            note="node + its browsers, median RSS during the run / concurrent sessions",
        ),
        Row(
            "memory_per_session_cold_mb",
            cold.rss_mb / slots,
            "report",
            "MB",
            note="driver + browsers of the browser-per-session loop / concurrent sessions",
        ),
        Row(
            "pacing_error_p99_ms",
            p99(errors),
            "< 250",
            "ms",
            note=f"{pace_n} sessions over {pace_window}s window, seed 42: |started_at - planned|",
        ),
        Row(
            "getrun_p99_ms",
            p99(latencies),
            "< 5",
            "ms",
            note=f"{get_clients} concurrent clients in one process, {get_seconds:.0f}s",
        ),
        Row(
            "watch_fanout_watchers",
            float(saw),
            ">= 100",
            note=f"of {watchers} WatchRun streams, those that saw COMPLETED",
        ),
        Row(
            "create_1m_run_s",
            created_s,
            "< 1",
            "s",
            note=million_note or "CreateRun(start) through the gateway",
        ),
        Row(
            "scheduler_rss_mb_1m",
            rss_after,
            "< 300",
            "MB",
            note="peak scheduler RSS over 5 s after that create, while dispatching",
        ),
        Row("pipeline_jobs_per_s", None, "n/a", note="needs the noop engine (not built yet)"),
        Row("pipeline_latency_p99_ms", None, "n/a", note="needs the noop engine (not built yet)"),
    ]
    meta = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "playwright": version("playwright"),
        "chromium": chromium_version,
        "nats_server": _nats_version(),
    }
    return rows, meta, details


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke check")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    began = time.perf_counter()
    rows, meta, details = asyncio.run(measure(args.quick))
    details["bench_seconds"] = round(time.perf_counter() - began, 1)
    write(RESULTS, rows, meta, details)
    print()
    print(", ".join(f"{k}={v}" for k, v in meta.items()))
    print(table(rows))
    print(f"\nwritten to {RESULTS}/latest.md and latest.json in {details['bench_seconds']:.0f}s")
    sys.exit(0)


if __name__ == "__main__":
    main()

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
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from bench import _gateway, _pacing, _scale, _throughput, pipeline, scaleout
from bench._fleet import Fleet, spec
from bench._report import Row, table, write
from cli._stack import Stack
from demo import DemoSite
from services.common.config import GatewaySettings
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
    get_period, get_processes = timedelta(milliseconds=100), 2
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
                f"{final.counters.failed} failed); node tree PSS {ours.pss_mb:.0f} MB "
                f"(RSS {ours.rss_mb:.0f} MB)"
            )
            say(f"browser per session: {cold_n} sessions at concurrency {slots}")
            cold = await _throughput.cold_loop(
                pw, url, n=cold_n, concurrency=slots, exclude_trees=pids.values()
            )
            say(
                f"  {cold.per_s:.2f} sessions/s; driver + browsers PSS {cold.pss_mb:.0f} MB "
                f"(RSS {cold.rss_mb:.0f} MB)"
            )
            details["throughput"] = {
                "playwright_warm_per_s": base.per_s,
                "smartfleet_per_s": ours.per_s,
                "browser_per_session_per_s": cold.per_s,
                "smartfleet_succeeded": final.counters.succeeded,
                "smartfleet_failed": final.counters.failed,
                "node_tree_pss_mb_median": ours.pss_mb,
                "node_tree_rss_mb_median": ours.rss_mb,
                "cold_tree_pss_mb_median": cold.pss_mb,
                "cold_tree_rss_mb_median": cold.rss_mb,
                "node_tree_pss_mb_peak": ours.pss_peak_mb,
                "cold_tree_pss_mb_peak": cold.pss_peak_mb,
                "pss_read_for_every_process": ours.pss_read and cold.pss_read,
            }
            browser = await _throughput.launch(pw)
            chromium_version = browser.version
            await browser.close()

            say(f"window pacing: {pace_n} sessions over {pace_window}s")
            errors, _ = await _pacing.pacing_errors_ms(
                fleet, url, sessions=pace_n, window_s=pace_window
            )
            say(f"  p99 start error {p99(errors):.0f} ms over {len(errors)} results")
            details["pacing"] = {
                "results": len(errors),
                "max_ms": max(errors),
                "p50_ms": sorted(errors)[len(errors) // 2],
            }

            say(
                f"GetRun: {get_clients} clients in {get_processes} processes, each calling every "
                f"{get_period.total_seconds() * 1000:.0f} ms for {get_seconds:.0f}s (open loop), "
                "through the gateway, then at the scheduler"
            )
            # A draft run: not final, so the gateway has to keep re-reading it.
            polled = await fleet.create(spec("bench-getrun", [url], 1), start=False)
            getrun_load = {
                "clients": get_clients,
                "period": get_period,
                "seconds": get_seconds,
                "processes": get_processes,
            }
            via_gateway = await _gateway.open_loop_getrun(
                stack.gateway_addr, polled.id, target="gateway", token=stack.token, **getrun_load
            )
            direct = await _gateway.open_loop_getrun(
                stack.scheduler_addr, polled.id, target="scheduler", **getrun_load
            )
            closed = await _gateway.closed_loop_getrun(
                fleet, polled.id, clients=get_clients, seconds=min(get_seconds, 5.0)
            )
            details["getrun"] = _gateway.getrun_details(
                via_gateway,
                direct,
                closed,
                processes=get_processes,
                staleness=GatewaySettings().gateway_run_staleness,
            )
            for name, result in (("gateway", via_gateway), ("scheduler", direct)):
                say(
                    f"  {name}: p99 {p99(result.latencies_ms):.1f} ms, "
                    f"{result.achieved_per_s:.0f}/s of {result.offered_per_s:.0f}/s offered"
                )
            say(f"  closed loop (back to back, one process): {closed.per_s:.0f} calls/s")

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

        say("pipeline: a stack with a noop-engine node (orchestration alone, no browser)")
        flow, noop_paced = await pipeline.measure(Path(tmp), quick=quick, say=say)
        details["pipeline"] = pipeline.details(flow, noop_paced)
        say("scale-out: noop nodes on three simulated hosts (network namespaces)")
        scaled = await scaleout.measure(Path(tmp), quick=quick, say=say)

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
            ours.pss_mb / slots,
            "report",
            "MB",
            note=(
                "node + its browsers, median PSS during the run / concurrent sessions "
                f"(RSS: {ours.rss_mb / slots:.0f})"
            ),
        ),
        Row(
            "memory_per_session_cold_mb",
            cold.pss_mb / slots,
            "report",
            "MB",
            note=(
                "driver + browsers of the browser-per-session loop, median PSS / concurrent "
                f"sessions (RSS: {cold.rss_mb / slots:.0f})"
            ),
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
            p99(via_gateway.latencies_ms),
            "< 5",
            "ms",
            note=_gateway.getrun_note(via_gateway, direct),
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
        Row(
            "pipeline_jobs_per_s",
            flow.per_s,
            ">= 5000",
            "jobs/s",
            note=f"{flow.succeeded:,} noop sessions, fast, one node of {pipeline.NOOP_SLOTS} "
            "slots: ok results / (last stored - run start)",
        ),
        Row(
            "pipeline_latency_p99_ms",
            noop_paced.percentile(0.99),
            "< 50",
            "ms",
            note=f"{noop_paced.sessions:,} noop sessions at {noop_paced.rate:,.0f}/s (window): "
            "result stored - planned due",
        ),
        scaleout.row(scaled),
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

"""`python -m bench.soak [--sessions 2000]`: a miniature soak, many sessions on one node.

Starts a local stack (one browser node) and the demo site, warms up, runs `--sessions`
sessions against one page and samples the memory of the node's process tree (the node, its
Playwright driver, its browsers): RSS and PSS when warm, before the run, and once it is over,
with the peak between; sessions/s over the first and the last 10% of results; the browser
recycles the node logged; failures. Prints a table, writes bench/results/soak.md and soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench._fleet import Fleet, spec
from bench._procs import browser_pids, tree_memory_mb
from bench._report import Row, table
from cli._stack import Stack
from demo import DemoSite
from smartfleet.v1 import common_pb2, runs_pb2

RESULTS = Path(__file__).resolve().parent / "results"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # since the soak run was created
    done: int  # results in so far
    pss_mb: float
    rss_mb: float
    browsers: tuple[int, ...]  # Chromium browser processes alive (pids)


@dataclass(slots=True)
class TreeWatch:
    """Samples the node's tree every `interval` seconds while the soak runs."""

    node_pid: int
    interval: float
    samples: list[Sample] = field(default_factory=list)
    seen_browsers: set[int] = field(default_factory=set)

    async def sample(self, began: float, done: int) -> Sample:
        pss, rss, _ = await asyncio.to_thread(tree_memory_mb, self.node_pid)
        browsers = tuple(await asyncio.to_thread(browser_pids, self.node_pid))
        self.seen_browsers.update(browsers)
        found = Sample(
            round(time.perf_counter() - began, 1), done, round(pss), round(rss), browsers
        )
        self.samples.append(found)
        return found

    async def follow(self, fleet: Fleet, run_id: str, began: float, sessions: int) -> None:
        last_said = 0
        while True:
            run = await fleet.get(run_id)
            done = run.counters.succeeded + run.counters.failed
            found = await self.sample(began, done)
            if done - last_said >= max(100, sessions // 20):
                last_said = done
                say(
                    f"  {done}/{sessions} done, node tree PSS {found.pss_mb:.0f} MB "
                    f"(RSS {found.rss_mb:.0f} MB), {len(found.browsers)} browser(s)"
                )
            await asyncio.sleep(self.interval)


async def settled_memory(node_pid: int, *, samples: int = 3) -> tuple[float, float]:
    """Median (PSS, RSS) of the node's tree over a few idle seconds."""
    await asyncio.sleep(2.0)
    taken = []
    for _ in range(samples):
        taken.append(await asyncio.to_thread(tree_memory_mb, node_pid))
        await asyncio.sleep(1.0)
    return statistics.median(t[0] for t in taken), statistics.median(t[1] for t in taken)


def rate(finished: list[float]) -> float:
    """Sessions/s over a stretch of sorted finish times."""
    span = finished[-1] - finished[0]
    return (len(finished) - 1) / span if span > 0 else 0.0


def node_events(log: Path, offset: int) -> dict[str, list[str]]:
    """The node's log lines about recycling and crashes since `offset` (bytes)."""
    events: dict[str, list[str]] = {"recycled": [], "crashed": []}
    with open(log, "rb") as handle:
        handle.seek(offset)
        for raw in handle:
            try:
                message = str(json.loads(raw).get("msg", ""))
            except ValueError:
                message = raw.decode(errors="replace").strip()
            if message.startswith("recycling "):
                events["recycled"].append(message)
            elif "disconnected; relaunching" in message:
                events["crashed"].append(message)
    return events


async def soak(
    sessions: int, slots: int, page: str, interval: float, env: dict[str, str]
) -> tuple[list[Row], dict[str, Any], dict[str, Any]]:
    with DemoSite() as site, tempfile.TemporaryDirectory(prefix="smartfleet-soak-") as tmp:
        url = f"{site.url}{page}"
        say(f"starting the stack (one node, {slots} slots) and the demo site at {site.url}")
        async with (
            Stack(
                data_dir=Path(tmp) / "stack",
                gateway_port=0,
                scheduler_port=0,
                node_slots=slots,
                env=env,
            ) as stack,
            Fleet(stack.gateway_addr, stack.token) as fleet,
        ):
            node_pid = stack.info.pids["node"]
            warm, _ = await fleet.run_to_end(
                spec("soak-warmup", [url], 2 * slots, concurrency=slots)
            )
            say(f"warm-up: {warm.counters.succeeded}/{2 * slots} ok")
            start_pss, start_rss = await settled_memory(node_pid)
            say(f"warm node tree: PSS {start_pss:.0f} MB, RSS {start_rss:.0f} MB")

            log = stack.log_path("node")
            log_offset = log.stat().st_size
            watch = TreeWatch(node_pid=node_pid, interval=interval)
            say(f"soak: {sessions} sessions on {page}, max_concurrency {slots}")
            began = time.perf_counter()
            run = await fleet.create(spec("soak", [url], sessions, concurrency=slots))
            follower = asyncio.get_running_loop().create_task(
                watch.follow(fleet, run.id, began, sessions)
            )
            try:
                final = await fleet.wait_final(run.id, timeout=max(600.0, 3.0 * sessions))
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
            seconds = time.perf_counter() - began
            end_pss, end_rss = await settled_memory(node_pid)
            say(f"after the soak: PSS {end_pss:.0f} MB, RSS {end_rss:.0f} MB ({seconds:.0f}s)")
            results = await fleet.results(run.id)
            events = node_events(log, log_offset)
            node_alive = stack.node_pid == node_pid

    ok = [r for r in results if r.outcome == common_pb2.OUTCOME_OK]
    failed = [r for r in results if r.outcome != common_pb2.OUTCOME_OK]
    finished = sorted(r.finished_at.ToDatetime().timestamp() for r in results)
    tenth = max(2, len(finished) // 10)
    first, last = rate(finished[:tenth]), rate(finished[-tenth:])
    peak_pss = max((s.pss_mb for s in watch.samples), default=0.0)
    peak_rss = max((s.rss_mb for s in watch.samples), default=0.0)
    recycles = len(events["recycled"])
    launched = len(watch.seen_browsers)
    chromium = next((r.browser_version for r in results if r.browser_version), "")
    rows = [
        Row("soak_sessions", float(len(results)), f">= {sessions}", note=f"results of {page}"),
        Row("soak_failures", float(len(failed)), "< 1", note="results other than ok"),
        Row("soak_sessions_per_s", len(results) / seconds, "report", note="whole run"),
        Row("first_10pct_per_s", first, "report", note=f"first {tenth} results by finish time"),
        Row("last_10pct_per_s", last, "report", note=f"last {tenth} results"),
        Row("last_vs_first_ratio", last / first if first else None, "report", note="expect ~1"),
        Row("node_tree_rss_start_mb", start_rss, "report", "MB", note="warm, idle, before"),
        Row("node_tree_rss_end_mb", end_rss, "report", "MB", note="idle, after the soak"),
        Row("node_tree_pss_start_mb", start_pss, "report", "MB", note="warm, idle, before"),
        Row("node_tree_pss_end_mb", end_pss, "report", "MB", note="idle, after the soak"),
        Row("node_tree_pss_peak_mb", peak_pss, "report", "MB", note=f"every {interval:g}s"),
        Row("node_tree_rss_peak_mb", peak_rss, "report", "MB", note="summed RSS over-counts"),
        Row("browser_recycles", float(recycles), "report", note="the node's log"),
        Row("browsers_seen", float(launched), "report", note="distinct browser pids sampled"),
    ]
    meta = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "playwright": version("playwright"),
        "chromium": chromium,
        "sessions": sessions,
        "slots": slots,
        "page": page,
    }
    details = {
        "seconds": round(seconds, 1),
        "run_status": runs_pb2.RunStatus.Name(final.status),
        "succeeded": final.counters.succeeded,
        "failed": final.counters.failed,
        "ok_results": len(ok),
        "failures": [f"{r.job_id} attempt {r.attempt}: {r.error}" for r in failed[:20]],
        "recycle_reasons": events["recycled"],
        "crashes": events["crashed"],
        "node_alive_at_end": node_alive,
        "env": env,
        "samples": [asdict(s) for s in watch.samples],
    }
    return rows, meta, details


def write(rows: list[Row], meta: dict[str, Any], details: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = ", ".join(f"{k}={v}" for k, v in meta.items())
    reasons = "\n".join(f"- {reason}" for reason in details["recycle_reasons"]) or "- none"
    (RESULTS / "soak.md").write_text(
        f"# Smartfleet soak\n\n{machine}\n\n{table(rows)}\n\n"
        f"Run {details['run_status']} in {details['seconds']:.0f}s. Recycles the node logged:\n\n"
        f"{reasons}\n"
    )
    data: dict[str, Any] = dict(meta)
    for row in rows:
        data[row.key] = row.value
    data["verdicts"] = {row.key: row.verdict for row in rows}
    data["details"] = details
    (RESULTS / "soak.json").write_text(json.dumps(data, indent=2, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000, help="sessions in the soak run")
    parser.add_argument("--slots", type=int, default=4, help="the node's slots (concurrency)")
    parser.add_argument("--page", default="/about", help="demo-site page every session opens")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--recycle-after", type=int, help="SMARTFLEET_BROWSER_RECYCLE_AFTER (node default: 500)"
    )
    parser.add_argument(
        "--recycle-above-mb", type=int, help="SMARTFLEET_BROWSER_RECYCLE_ABOVE_MB (1024)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    env = {}
    if args.recycle_after is not None:
        env["SMARTFLEET_BROWSER_RECYCLE_AFTER"] = str(args.recycle_after)
    if args.recycle_above_mb is not None:
        env["SMARTFLEET_BROWSER_RECYCLE_ABOVE_MB"] = str(args.recycle_above_mb)
    rows, meta, details = asyncio.run(
        soak(args.sessions, args.slots, args.page, args.interval, env)
    )
    write(rows, meta, details)
    print()
    print(", ".join(f"{k}={v}" for k, v in meta.items()))
    print(table(rows))
    print(f"\nwritten to {RESULTS}/soak.md and soak.json")
    sys.exit(0 if all(row.verdict != "MISS" for row in rows) else 1)


if __name__ == "__main__":
    main()

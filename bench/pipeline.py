"""Orchestration alone: runs on the benchmark-only `noop` engine (no browser) through a whole local
stack (scheduler on SQLite, NATS JetStream, gateway, one noop node with many slots).

- jobs/s: a big fast-paced run; completed sessions / (last result stored - run started).
- latency: a window-paced run at 1,000 jobs/s; p99 of (result stored - job's planned due time),
  from the scheduler's own database file after the run.

`python -m bench.pipeline [--quick] [--profile DIR]` runs both alone; with --profile, py-spy
records the scheduler and the node during the throughput run (flame graphs and raw stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import duration_pb2

from bench._fleet import Fleet
from cli._stack import Stack
from services.common.contracts import spec_data_from_pb
from services.common.spec import parse_spec
from services.scheduler._planner import RunPlan
from smartfleet.v1 import common_pb2, runs_pb2

# A loopback target (always allowlisted); the noop engine never opens it.
TARGET = "http://127.0.0.1:9/noop"
NOOP_SLOTS = 1000


@dataclass(frozen=True, slots=True)
class Throughput:
    sessions: int
    succeeded: int
    seconds: float  # run started → last result stored
    cpu_s: dict[str, float]  # CPU seconds each process used meanwhile

    @property
    def per_s(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] if ordered else math.nan


@dataclass(frozen=True, slots=True)
class Latency:
    sessions: int
    rate: float  # planned jobs/s
    latencies_ms: list[float]  # result stored - planned due, per result
    # The same path in stages, per result: due → job row written (dispatch), → session started
    # on the node (publish, bus, fetch), → result stored (session, report, ingest).
    stages_ms: dict[str, list[float]]
    cpu_s: dict[str, float]  # CPU seconds each process used during the run

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction)

    def stages(self, fraction: float) -> dict[str, float]:
        return {name: percentile(values, fraction) for name, values in self.stages_ms.items()}


def noop_spec(name: str, sessions: int, *, window_s: int = 0, seed: int = 7) -> runs_pb2.RunSpec:
    """A run that names the noop engine explicitly (nothing defaults to it)."""
    pacing = runs_pb2.Pacing(mode=runs_pb2.PACING_MODE_FAST)
    if window_s:
        pacing = runs_pb2.Pacing(
            mode=runs_pb2.PACING_MODE_WINDOW, window=duration_pb2.Duration(seconds=window_s)
        )
    return runs_pb2.RunSpec(
        name=name,
        targets=[TARGET],
        sessions=sessions,
        engine=common_pb2.ENGINE_NOOP,
        pacing=pacing,
        limits=runs_pb2.Limits(session_timeout=duration_pb2.Duration(seconds=30)),
        seed=seed,
        retry=runs_pb2.RetryPolicy(max_attempts=1),
    )


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Stored:
    index: int
    dispatched_at: datetime  # the job row written, just before its envelope is published
    started_at: datetime  # on the node
    stored_at: datetime


def _stored(db_path: Path, run_id: str) -> tuple[datetime, list[_Stored]]:
    """(run started_at, its ok results) from the scheduler's database file."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        (started,) = db.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)).fetchone()
        rows = db.execute(
            'SELECT r."index", j.dispatched_at, r.started_at, r.stored_at FROM results r '
            "JOIN jobs j ON j.id = r.job_id WHERE r.run_id = ? AND r.outcome = 'ok'",
            (run_id,),
        ).fetchall()
    return _utc(started), [_Stored(row[0], *(_utc(at) for at in row[1:])) for row in rows]


@contextlib.asynccontextmanager
async def noop_stack(root: Path, *, slots: int = NOOP_SLOTS) -> AsyncIterator[Stack]:
    async with Stack(
        data_dir=root / "noop-stack",
        gateway_port=0,
        scheduler_port=0,
        node_slots=slots,
        node_engine="noop",
        node_id="bench-noop",
        env={"SMARTFLEET_LOG_LEVEL": "WARNING"},
    ) as stack:
        yield stack


def db_path(stack: Stack) -> Path:
    return stack.data_dir / "smartfleet.db"


async def warm_up(fleet: Fleet) -> None:
    """A small run first: consumers bound, connections and caches warm."""
    run = await fleet.create(noop_spec("pipeline-warmup", 500))
    final = await fleet.wait_final(run.id)
    assert final.counters.succeeded == 500, final.counters


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def jobs_per_s(fleet: Fleet, stack: Stack, *, sessions: int) -> Throughput:
    pids = stack.info.pids
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    run = await fleet.create(noop_spec("pipeline-throughput", sessions))
    final = await fleet.wait_final(run.id, timeout=900)
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    started, stored = await asyncio.to_thread(_stored, db_path(stack), run.id)
    last = max((row.stored_at for row in stored), default=started)
    return Throughput(
        sessions=sessions,
        succeeded=final.counters.succeeded,
        seconds=(last - started).total_seconds(),
        cpu_s=cpu,
    )


async def latency(fleet: Fleet, stack: Stack, *, sessions: int, window_s: int) -> Latency:
    pids = stack.info.pids
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    run = await fleet.create(noop_spec("pipeline-latency", sessions, window_s=window_s))
    await fleet.wait_final(run.id, timeout=window_s + 600)
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    current = await fleet.get(run.id)
    started, stored = await asyncio.to_thread(_stored, db_path(stack), run.id)
    plan = RunPlan(parse_spec(spec_data_from_pb(current.spec)), started_at=started)

    def ms(later: datetime, earlier: datetime) -> float:
        return (later - earlier).total_seconds() * 1000

    dues = [plan.job(row.index).due for row in stored]
    return Latency(
        sessions=sessions,
        rate=sessions / window_s,
        latencies_ms=[ms(row.stored_at, due) for row, due in zip(stored, dues, strict=True)],
        stages_ms={
            "dispatch": [ms(row.dispatched_at, due) for row, due in zip(stored, dues, strict=True)],
            "to_node": [ms(row.started_at, row.dispatched_at) for row in stored],
            "to_stored": [ms(row.stored_at, row.started_at) for row in stored],
        },
        cpu_s=cpu,
    )


class Profiler:
    """py-spy record on some processes while a block runs (needs the `bench` extra)."""

    def __init__(self, out: Path, pids: dict[str, int], *, prefix: str, rate: int = 200) -> None:
        self._out = out
        self._pids = pids
        self._prefix = prefix
        self._rate = rate
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Profiler:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self._out.mkdir(parents=True, exist_ok=True)
        for name, pid in self._pids.items():
            for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
                self._procs.append(
                    subprocess.Popen(
                        [
                            exe,
                            "record",
                            "--pid",
                            str(pid),
                            "--rate",
                            str(self._rate),
                            "--format",
                            fmt,
                            "--output",
                            str(self._out / f"{self._prefix}-{name}.{suffix}"),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        time.sleep(0.5)  # attached before the work starts
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            proc.send_signal(2)  # SIGINT: py-spy writes what it recorded
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


# Leaf frames py-spy counts as active that are waits: the event loop's poll, aiosqlite's idle
# worker thread, a thread parked on a lock.
_IDLE_LEAVES = ("EpollSelector.select", "aiosqlite/core.py:59)", "Condition.wait", "Event.wait")


def summarize(raw: Path, *, top: int = 25) -> str:
    """Self and inclusive shares of the busiest frames in a py-spy raw (collapsed) file, waits
    left out."""
    total = idle = 0
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].endswith(_IDLE_LEAVES) or any(
            frames[-1].startswith(leaf) for leaf in _IDLE_LEAVES
        ):
            idle += count
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    lines = [f"{raw.name}: {total} busy samples ({idle} waiting left out)"]
    for title, counts in (("self", own), ("inclusive", inclusive)):
        lines.append(f"  {title}:")
        for frame, count in sorted(counts.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"    {100 * count / max(1, total):5.1f}%  {frame}")
    return "\n".join(lines)


def details(throughput: Throughput, paced: Latency) -> dict[str, Any]:
    """What bench/results/latest.json keeps of both runs."""
    return {
        "slots": NOOP_SLOTS,
        "throughput": {
            "sessions": throughput.sessions,
            "succeeded": throughput.succeeded,
            "seconds": round(throughput.seconds, 3),
            "cpu_ms_per_1000_jobs": {
                name: round(1e6 * cpu / max(1, throughput.succeeded), 1)
                for name, cpu in sorted(throughput.cpu_s.items())
            },
        },
        "latency": {
            "sessions": paced.sessions,
            "rate_per_s": paced.rate,
            "results": len(paced.latencies_ms),
            **{
                f"p{round(100 * q)}_ms": round(paced.percentile(q), 1)
                for q in (0.5, 0.9, 0.99, 1.0)
            },
            "stages_p50_ms": {k: round(v, 1) for k, v in paced.stages(0.5).items()},
            "stages_p99_ms": {k: round(v, 1) for k, v in paced.stages(0.99).items()},
            # At this rate the fixed cost of each claim and each stored batch shows.
            "cpu_percent_of_a_core": {
                name: round(100 * cpu / (paced.sessions / paced.rate), 1)
                for name, cpu in sorted(paced.cpu_s.items())
            },
        },
    }


async def measure(
    root: Path, *, quick: bool, profile: Path | None = None, say: Callable[[str], None] = print
) -> tuple[Throughput, Latency]:
    """Both figures on a fresh noop stack under `root`."""
    sessions = 5_000 if quick else 30_000
    latency_sessions, window_s = (5_000, 5) if quick else (15_000, 15)
    async with noop_stack(root) as stack, Fleet(stack.gateway_addr, stack.token) as fleet:
        await warm_up(fleet)
        say(f"pipeline (noop engine, {NOOP_SLOTS} slots): {sessions:,} sessions, fast pacing")
        pids = {name: stack.info.pids[name] for name in ("scheduler", "node")}
        with Profiler(profile, pids, prefix="throughput") if profile else contextlib.nullcontext():
            throughput = await jobs_per_s(fleet, stack, sessions=sessions)
        say(
            f"  {throughput.per_s:,.0f} jobs/s ({throughput.succeeded:,} ok in "
            f"{throughput.seconds:.1f}s); CPU ms per 1,000 jobs: "
            + ", ".join(
                f"{name} {1e6 * cpu / max(1, throughput.succeeded):.0f}"
                for name, cpu in sorted(throughput.cpu_s.items())
            )
        )
        say(f"pipeline latency: {latency_sessions:,} sessions over {window_s}s (window pacing)")
        with Profiler(profile, pids, prefix="latency") if profile else contextlib.nullcontext():
            paced = await latency(fleet, stack, sessions=latency_sessions, window_s=window_s)
        say(
            f"  p50 {paced.percentile(0.5):.1f} ms, p99 {paced.percentile(0.99):.1f} ms over "
            f"{len(paced.latencies_ms):,} results; stages p50/p99 ms: "
            + ", ".join(
                f"{name} {p50:.1f}/{p99:.1f}"
                for (name, p50), p99 in zip(
                    paced.stages(0.5).items(), paced.stages(0.99).values(), strict=True
                )
            )
        )
    return throughput, paced


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--profile", type=Path, help="py-spy the scheduler and node into DIR")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartfleet-pipeline-") as tmp:
        asyncio.run(measure(Path(tmp), quick=args.quick, profile=args.profile))
    if args.profile:
        for raw in sorted(args.profile.glob("*.txt")):
            print(summarize(raw))


if __name__ == "__main__":
    main()

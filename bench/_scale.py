"""A run of a million sessions: how long CreateRun takes, what the scheduler holds afterwards."""

from __future__ import annotations

import asyncio
import time

from bench._fleet import Fleet, spec
from bench._procs import rss_mb
from smartfleet.v1 import runs_pb2


async def create_million(
    fleet: Fleet, url: str, *, scheduler_pid: int, sessions: int, settle_s: float = 5.0
) -> tuple[float, float, float]:
    """(CreateRun seconds, scheduler RSS MB before, peak after) for a started run, then cancel it.

    Started, so the scheduler plans and dispatches it while we sample, as it would in use.
    """
    before = rss_mb(scheduler_pid)
    began = time.perf_counter()
    run = await fleet.create(spec("bench-1m", [url], sessions), start=True)
    seconds = time.perf_counter() - began
    peak = 0.0
    for _ in range(int(settle_s / 0.25)):
        peak = max(peak, rss_mb(scheduler_pid))
        await asyncio.sleep(0.25)
    await fleet.api.CancelRun(
        runs_pb2.CancelRunRequest(run_id=run.id), metadata=fleet.md, timeout=30
    )
    return seconds, before, peak

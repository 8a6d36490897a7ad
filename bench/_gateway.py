"""The gateway's read path under load: GetRun latency with many clients, WatchRun fan-out."""

from __future__ import annotations

import asyncio
import time

import grpc

from bench._fleet import TERMINAL, Fleet, spec
from smartfleet.v1 import runs_pb2


async def getrun_latencies_ms(
    fleet: Fleet, run_id: str, *, clients: int, seconds: float
) -> list[float]:
    """`clients` coroutines calling GetRun back to back for `seconds`; every call's latency."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    request = runs_pb2.GetRunRequest(run_id=run_id)

    async def client() -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            await fleet.api.GetRun(request, metadata=fleet.md, timeout=10)
            latencies.append((time.perf_counter() - began) * 1000)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


async def watch_fanout(fleet: Fleet, url: str, *, watchers: int, sessions: int) -> tuple[int, int]:
    """`watchers` WatchRun streams on one progressing run: (saw the completed update, updates)."""
    run = await fleet.create(spec("bench-fanout", [url], sessions), start=False)
    updates = 0

    async def watch() -> bool:
        nonlocal updates
        try:
            async for update in fleet.api.WatchRun(
                runs_pb2.WatchRunRequest(run_id=run.id), metadata=fleet.md, timeout=300
            ):
                updates += 1
                if update.status in TERMINAL:
                    return update.status == runs_pb2.RUN_STATUS_COMPLETED
        except grpc.aio.AioRpcError:
            return False
        return False

    tasks = [asyncio.ensure_future(watch()) for _ in range(watchers)]
    await asyncio.sleep(1.0)  # every stream open before the run starts moving
    await fleet.api.StartRun(runs_pb2.StartRunRequest(run_id=run.id), metadata=fleet.md, timeout=10)
    done = await asyncio.gather(*tasks)
    return sum(done), updates

"""A small async client of the public Fleet API for the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc
from google.protobuf import duration_pb2

from smartfleet.v1 import fleet_service_pb2_grpc, results_pb2, runs_pb2

TERMINAL = {
    runs_pb2.RUN_STATUS_COMPLETED,
    runs_pb2.RUN_STATUS_CANCELLED,
    runs_pb2.RUN_STATUS_FAILED,
}


class Fleet:
    """One channel to the gateway with the bearer token; `async with Fleet(addr, token)`."""

    def __init__(self, addr: str, token: str) -> None:
        self.channel = grpc.aio.insecure_channel(addr)
        self.api = fleet_service_pb2_grpc.FleetServiceStub(self.channel)
        self.md = (("authorization", f"Bearer {token}"),)

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def create(self, spec: runs_pb2.RunSpec, *, start: bool = True) -> runs_pb2.Run:
        return (
            await self.api.CreateRun(
                runs_pb2.CreateRunRequest(spec=spec, start=start), metadata=self.md, timeout=60
            )
        ).run

    async def get(self, run_id: str, *, timeout: float = 10) -> runs_pb2.Run:
        return (
            await self.api.GetRun(
                runs_pb2.GetRunRequest(run_id=run_id), metadata=self.md, timeout=timeout
            )
        ).run

    async def wait_final(self, run_id: str, *, timeout: float = 600) -> runs_pb2.Run:
        last: runs_pb2.Run | None = None
        async for update in self.api.WatchRun(
            runs_pb2.WatchRunRequest(run_id=run_id), metadata=self.md, timeout=timeout
        ):
            last = update.run
            if last.status in TERMINAL:
                break
        assert last is not None and last.status in TERMINAL, f"run {run_id} did not finish"
        return last

    async def run_to_end(self, spec: runs_pb2.RunSpec) -> tuple[runs_pb2.Run, float]:
        """Create and start a run, wait for its end; (final run, wall seconds from create)."""
        began = time.perf_counter()
        run = await self.create(spec)
        final = await self.wait_final(run.id)
        return final, time.perf_counter() - began

    async def results(self, run_id: str) -> list[results_pb2.SessionResult]:
        found: list[results_pb2.SessionResult] = []
        token = ""
        while True:
            page = await self.api.ListResults(
                results_pb2.ListResultsRequest(run_id=run_id, page_size=5000, page_token=token),
                metadata=self.md,
                timeout=30,
            )
            found.extend(page.results)
            token = page.next_page_token
            if not token:
                return found


def spec(
    name: str,
    targets: Sequence[str],
    sessions: int,
    *,
    concurrency: int = 0,
    window_s: float = 0,
    seed: int = 0,
) -> runs_pb2.RunSpec:
    pacing = runs_pb2.Pacing(mode=runs_pb2.PACING_MODE_FAST)
    if window_s:
        pacing = runs_pb2.Pacing(
            mode=runs_pb2.PACING_MODE_WINDOW, window=duration_pb2.Duration(seconds=int(window_s))
        )
    return runs_pb2.RunSpec(
        name=name,
        targets=list(targets),
        sessions=sessions,
        pacing=pacing,
        limits=runs_pb2.Limits(
            max_concurrency=concurrency, session_timeout=duration_pb2.Duration(seconds=30)
        ),
        seed=seed,
        retry=runs_pb2.RetryPolicy(max_attempts=1),
    )

"""The gateway's read path under load: GetRun latency with many clients, WatchRun fan-out.

`getrun_p99_ms` means "200 dashboards polling a run": an open loop. Each client has its own
channel and sends GetRun at a fixed period whatever the answers do; a call's latency counts from
the time it was *scheduled*, so a slow answer that delays the next send is charged to the next
call too (no coordinated omission). The clients run in separate processes (`python -m
bench._gateway`), so this process's event loop is not what is measured. The closed loop
(`closed_loop_getrun`, callers back to back) only gives the maximum throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import grpc

from bench._fleet import TERMINAL, Fleet, spec
from smartfleet.v1 import runs_pb2

Target = Literal["gateway", "scheduler"]
_PATHS: dict[Target, str] = {
    "gateway": "/smartfleet.v1.FleetService/GetRun",
    "scheduler": "/smartfleet.v1.FleetService/GetRun",
}
# The bearer token goes to the client processes through the environment, not their argv.
_TOKEN_ENV = "SMARTFLEET_BENCH_TOKEN"


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    """Calls measured after the warm-up: latency from the scheduled send, and from the real one."""

    clients: int
    period: timedelta
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    service_ms: list[float] = field(repr=False)
    errors: dict[str, int]
    late_sends: int  # sends more than 1 ms after their scheduled time (client-side lag)
    answered_in_window: int  # answers that arrived within the measured window

    @property
    def offered_per_s(self) -> float:
        return self.clients / self.period.total_seconds()

    @property
    def achieved_per_s(self) -> float:
        """Answers per second that arrived within the measured window."""
        return self.answered_in_window / self.seconds


@dataclass(frozen=True, slots=True)
class ClosedLoopResult:
    calls: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)

    @property
    def per_s(self) -> float:
        return self.calls / self.seconds


async def open_loop_getrun(
    address: str,
    run_id: str,
    *,
    target: Target,
    token: str | None = None,
    clients: int = 200,
    period: timedelta = timedelta(milliseconds=100),
    seconds: float = 10.0,
    warmup: float = 1.0,
    processes: int = 2,
) -> OpenLoopResult:
    """`clients` channels spread over `processes` client processes, each calling GetRun every
    `period` (staggered evenly) for `warmup` + `seconds`; only the last `seconds` count."""
    env = {**os.environ, _TOKEN_ENV: token or ""}
    workers = []
    for index in range(processes):
        first, last = clients * index // processes, clients * (index + 1) // processes
        workers.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench._gateway",
                f"--address={address}",
                f"--run-id={run_id}",
                f"--target={target}",
                f"--clients={first}:{last}:{clients}",
                f"--period-ms={period.total_seconds() * 1000}",
                f"--warmup={warmup}",
                f"--seconds={seconds}",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
        )
    # Every process says when its channels are connected; then all start on one clock.
    for worker in workers:
        assert worker.stdout is not None
        if await asyncio.wait_for(worker.stdout.readline(), 60) != b"ready\n":
            raise RuntimeError("a GetRun client process did not connect")
    start_at = f"{time.time() + 0.2}\n".encode()
    outputs = await asyncio.gather(*(worker.communicate(start_at) for worker in workers))
    latencies: list[float] = []
    service: list[float] = []
    errors: dict[str, int] = {}
    late = answered = 0
    for worker, (stdout, _) in zip(workers, outputs, strict=True):
        if worker.returncode != 0:
            raise RuntimeError(f"a GetRun client process exited with {worker.returncode}")
        part = json.loads(stdout)
        latencies += part["latencies_ms"]
        service += part["service_ms"]
        late += part["late_sends"]
        answered += part["answered_in_window"]
        for code, count in part["errors"].items():
            errors[code] = errors.get(code, 0) + count
    return OpenLoopResult(clients, period, seconds, latencies, service, errors, late, answered)


async def _client_process(args: argparse.Namespace) -> dict[str, Any]:
    """One client process: clients [first, last) of `total`, each on its own channel."""
    first, last, total = (int(part) for part in args.clients.split(":"))
    period = args.period_ms / 1000
    path = _PATHS[args.target]
    token = os.environ.get(_TOKEN_ENV, "")
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    request = runs_pb2.GetRunRequest(run_id=args.run_id)
    channels = [grpc.aio.insecure_channel(args.address) for _ in range(first, last)]
    await asyncio.wait_for(
        asyncio.gather(*(channel.channel_ready() for channel in channels)), timeout=30
    )
    calls = [
        channel.unary_unary(
            path,
            request_serializer=runs_pb2.GetRunRequest.SerializeToString,
            response_deserializer=runs_pb2.GetRunResponse.FromString,
        )
        for channel in channels
    ]
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    start_at = float(await loop.run_in_executor(None, sys.stdin.readline))
    began = loop.time() + (start_at - time.time())
    measure_from = began + args.warmup
    end = measure_from + args.seconds
    latencies: list[float] = []
    service: list[float] = []
    errors: dict[str, int] = {}
    late = answered = 0

    async def client(position: int, call: Any) -> None:
        nonlocal late, answered
        scheduled = began + period * position / total
        while scheduled < end:
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = loop.time()
            try:
                await call(request, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as error:
                if scheduled >= measure_from:
                    errors[error.code().name] = errors.get(error.code().name, 0) + 1
            else:
                done = loop.time()
                answered += measure_from <= done < end
                if scheduled >= measure_from:
                    latencies.append((done - scheduled) * 1000)
                    service.append((done - sent) * 1000)
                    late += sent - scheduled > 0.001
            scheduled += period

    try:
        await asyncio.gather(*(client(first + i, call) for i, call in enumerate(calls)))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return {
        "latencies_ms": latencies,
        "service_ms": service,
        "errors": errors,
        "late_sends": late,
        "answered_in_window": answered,
    }


async def closed_loop_getrun(
    fleet: Fleet, run_id: str, *, clients: int, seconds: float
) -> ClosedLoopResult:
    """`clients` coroutines on one channel calling GetRun back to back: the maximum call rate."""
    latencies: list[float] = []
    request = runs_pb2.GetRunRequest(run_id=run_id)
    began = time.perf_counter()
    deadline = began + seconds

    async def client() -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            await fleet.api.GetRun(request, metadata=fleet.md, timeout=10)
            latencies.append((time.perf_counter() - sent) * 1000)

    await asyncio.gather(*(client() for _ in range(clients)))
    return ClosedLoopResult(len(latencies), time.perf_counter() - began, latencies)


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
                if update.run.status in TERMINAL:
                    return update.run.status == runs_pb2.RUN_STATUS_COMPLETED
        except grpc.aio.AioRpcError:
            return False
        return False

    tasks = [asyncio.ensure_future(watch()) for _ in range(watchers)]
    await asyncio.sleep(1.0)  # every stream open before the run starts moving
    await fleet.api.StartRun(runs_pb2.StartRunRequest(run_id=run.id), metadata=fleet.md, timeout=10)
    done = await asyncio.gather(*tasks)
    return sum(done), updates


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._gateway", description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--target", choices=list(_PATHS), required=True)
    parser.add_argument("--clients", required=True, help="first:last:total")
    parser.add_argument("--period-ms", type=float, required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    result = asyncio.run(_client_process(parser.parse_args()))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    _main()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def open_loop_summary(result: OpenLoopResult) -> dict[str, Any]:
    return {
        "offered_per_s": result.offered_per_s,
        "achieved_per_s": result.achieved_per_s,
        "calls": len(result.latencies_ms),
        "p50_ms": _percentile(result.latencies_ms, 0.50),
        "p99_ms": _percentile(result.latencies_ms, 0.99),
        "max_ms": max(result.latencies_ms, default=math.nan),
        # From the real send: what the servers took, without the clients' own lateness.
        "p99_from_send_ms": _percentile(result.service_ms, 0.99),
        "late_sends": result.late_sends,
        "errors": result.errors,
    }


def getrun_details(
    via_gateway: OpenLoopResult,
    direct: OpenLoopResult,
    closed: ClosedLoopResult,
    *,
    processes: int,
    staleness: timedelta,
) -> dict[str, Any]:
    gateway, scheduler = open_loop_summary(via_gateway), open_loop_summary(direct)
    return {
        "load": (
            f"open loop: {via_gateway.clients} clients, each on its own channel, one GetRun "
            f"every {via_gateway.period.total_seconds() * 1000:.0f} ms, in {processes} processes; "
            "latency from each call's scheduled send; a draft run, so the gateway re-reads it"
        ),
        "seconds": via_gateway.seconds,
        "gateway_run_staleness_ms": staleness.total_seconds() * 1000,
        "gateway": gateway,
        "scheduler_direct": scheduler,
        "gateway_vs_scheduler_p99_ratio": gateway["p99_ms"] / scheduler["p99_ms"],
        "closed_loop_per_s": closed.per_s,
        "closed_loop_p99_ms": _percentile(closed.latencies_ms, 0.99),
    }


def getrun_note(via_gateway: OpenLoopResult, direct: OpenLoopResult) -> str:
    errors = sum(via_gateway.errors.values())
    return (
        f"{via_gateway.clients} clients x 1 call/"
        f"{via_gateway.period.total_seconds() * 1000:.0f} ms (open loop): offered "
        f"{via_gateway.offered_per_s:.0f}/s, achieved {via_gateway.achieved_per_s:.0f}/s"
        + (f", {errors} errors" if errors else "")
        + f"; scheduler direct p99 {_percentile(direct.latencies_ms, 0.99):.1f} ms"
        f" at {direct.achieved_per_s:.0f}/s"
    )

"""Retries, dead jobs, pause/resume, cancel, per-host limits and fair share, on a real scheduler.

A test node peer pulls envelopes from a real nats-server and reports chosen outcomes over the
real NodeLink API, so the scheduler's decisions are observed exactly as nodes see them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.client import JetStreamContext

from services.common import bus
from services.common.contracts import envelope_from_bytes, result_to_pb, spec_message
from services.common.types import ErrorClass, JobEnvelope, Outcome, SessionResult, WebVitals
from services.scheduler import SchedulerService
from smartfleet.v1 import (
    common_pb2,
    fleet_service_pb2_grpc,
    node_link_pb2,
    node_link_pb2_grpc,
    nodes_pb2,
    results_pb2,
    runs_pb2,
)
from tests.integration.test_scheduler import (
    channel,
    database_url,
    register,
    scheduler,
    wait_for_status,
)

__all__ = ["channel", "database_url", "scheduler"]  # fixtures used here
pytestmark = pytest.mark.timeout(60)


class Peer:
    """Pulls envelopes of the chromium pool and reports results as a node would."""

    def __init__(self, js: JetStreamContext, link: node_link_pb2_grpc.NodeLinkServiceStub) -> None:
        self._js = js
        self._link = link
        self._sub: object | None = None
        self.arrivals: list[tuple[float, JobEnvelope]] = []

    async def fetch(self, batch: int = 10, timeout: float = 3.0) -> list[JobEnvelope]:
        if self._sub is None:
            self._sub = await self._js.pull_subscribe_bind(
                bus.pool_consumer("chromium"), stream=bus.STREAM
            )
        try:
            messages = await self._sub.fetch(batch=batch, timeout=timeout)  # type: ignore[attr-defined]
        except (NatsTimeout, TimeoutError):
            # nats-py raises either; a timed-out pull may also hold the next message until ack_wait.
            return []
        envelopes = []
        for message in messages:
            envelope = envelope_from_bytes(message.data)
            self.arrivals.append((time.monotonic(), envelope))
            envelopes.append(envelope)
            await message.ack()
        return envelopes

    async def collect(self, count: int, timeout: float = 5.0) -> list[JobEnvelope]:
        """Fetch until `count` envelopes arrived (a fetch may return part of a batch)."""
        got: list[JobEnvelope] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got += await self.fetch(
                batch=count - len(got), timeout=max(0.1, deadline - time.monotonic())
            )
        return got

    async def report(
        self,
        envelopes: list[JobEnvelope],
        outcome: Outcome = Outcome.OK,
        error_class: ErrorClass = ErrorClass.NONE,
        status: int = 200,
        measured: Callable[[JobEnvelope], dict[str, Any]] | None = None,
    ) -> node_link_pb2.ReportResultsResponse:
        now = datetime.now(UTC)
        results = [
            result_to_pb(
                SessionResult(
                    job_id=e.job_id,
                    attempt=e.attempt,
                    run_id=e.run_id,
                    index=e.index,
                    outcome=outcome,
                    error_class=error_class,
                    started_at=now,
                    finished_at=now,
                    duration_ms=1.0,
                    node_id="peer",
                    engine="chromium",
                    http_status=status,
                    target_url=e.target_url,
                    cell=e.cell,
                    **(measured(e) if measured else {}),
                )
            )
            for e in envelopes
        ]
        return await self._link.ReportResults(
            node_link_pb2.ReportResultsRequest(node_id="peer", results=results), timeout=5
        )


@pytest.fixture
async def peer(channel: grpc.aio.Channel, scheduler: SchedulerService) -> AsyncIterator[Peer]:
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)

    async def heartbeat() -> None:
        # Keeps the peer's registration alive (the fixture's scheduler loses nodes after 1 s).
        while True:
            await asyncio.sleep(0.2)
            slots = max((n.slots for n in scheduler.registry.nodes()), default=0)
            await link.Heartbeat(
                node_link_pb2.HeartbeatRequest(
                    node_id="peer", state=nodes_pb2.NODE_STATE_READY, slots=slots
                ),
                timeout=5,
            )

    nc = await nats.connect(scheduler.settings.nats_url)
    beating = asyncio.create_task(heartbeat())
    try:
        yield Peer(nc.jetstream(), link)
    finally:
        beating.cancel()
        await nc.close()


def api_of(channel: grpc.aio.Channel) -> fleet_service_pb2_grpc.FleetServiceStub:
    return fleet_service_pb2_grpc.FleetServiceStub(channel)


async def create(
    api: fleet_service_pb2_grpc.FleetServiceStub, spec: dict[str, object], *, start: bool = True
) -> runs_pb2.Run:
    message = spec_message({"targets": ["http://127.0.0.1:9/"], **spec})
    return (
        await api.CreateRun(runs_pb2.CreateRunRequest(spec=message, start=start), timeout=5)
    ).run


async def get(api: fleet_service_pb2_grpc.FleetServiceStub, run_id: str) -> runs_pb2.Run:
    return (await api.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=5)).run


async def test_transient_failures_back_off_then_die(channel: grpc.aio.Channel, peer: Peer) -> None:
    """A job failing transiently is retried after each backoff, then ends dead and listed as such."""
    api = api_of(channel)
    await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=2)
    run = await create(
        api, {"sessions": 1, "retry": {"max_attempts": 3, "backoff": ["0.3s", "0.6s"]}}
    )
    reported_at = []
    for attempt in (1, 2, 3):
        envelopes = await peer.fetch(timeout=5)
        assert [(e.index, e.attempt) for e in envelopes] == [(0, attempt)]
        if attempt > 1:
            assert peer.arrivals[-1][0] - reported_at[-1] >= (0.3 if attempt == 2 else 0.6) - 0.05
        if attempt < 3:
            current = await get(api, run.id)
            assert current.counters.in_flight == 1
        # A browser crash is transient but not the host's fault, so no host backoff interferes.
        await peer.report(envelopes, Outcome.BROWSER_CRASH, ErrorClass.TRANSIENT, status=0)
        reported_at.append(time.monotonic())
        if attempt < 3:
            waiting = await get(api, run.id)
            assert (waiting.counters.retrying, waiting.counters.in_flight) == (1, 0)
    final = await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)
    assert (final.counters.failed, final.counters.dead, final.counters.succeeded) == (1, 1, 0)
    dead = await api.ListJobs(
        runs_pb2.ListJobsRequest(run_id=run.id, statuses=[runs_pb2.JOB_STATUS_DEAD]), timeout=5
    )
    assert [(job.index, job.attempt, job.outcome) for job in dead.jobs] == [
        (0, 3, common_pb2.OUTCOME_BROWSER_CRASH)
    ]


async def test_permanent_failure_is_not_retried(channel: grpc.aio.Channel, peer: Peer) -> None:
    """A 404 (permanent) fails the job at once, with no second attempt."""
    api = api_of(channel)
    await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=2)
    run = await create(api, {"sessions": 1, "retry": {"backoff": ["0s"]}})
    await peer.report(
        await peer.fetch(timeout=5), Outcome.HTTP_ERROR, ErrorClass.PERMANENT, status=404
    )
    final = await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)
    assert (final.counters.failed, final.counters.dead, final.counters.dispatched) == (1, 0, 1)
    assert await peer.fetch(timeout=0.5) == []


async def test_pause_stops_dispatch_and_resume_continues(
    channel: grpc.aio.Channel, peer: Peer
) -> None:
    """Paused: in-flight sessions finish and count, nothing new is sent; resumed: the rest runs."""
    api = api_of(channel)
    await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=2)
    run = await create(api, {"sessions": 5})
    first = await peer.collect(2)
    assert len(first) == 2
    paused = (await api.PauseRun(runs_pb2.PauseRunRequest(run_id=run.id), timeout=5)).run
    assert paused.status == runs_pb2.RUN_STATUS_PAUSED
    await peer.report(first)
    assert await peer.fetch(timeout=1.0) == []
    assert (await get(api, run.id)).counters.succeeded == 2
    await api.ResumeRun(runs_pb2.ResumeRunRequest(run_id=run.id), timeout=5)
    done = 2
    while done < 5:
        envelopes = await peer.fetch(timeout=5)
        await peer.report(envelopes)
        done += len(envelopes)
    final = await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)
    assert final.counters.succeeded == 5


async def test_cancel_withdraws_work_and_keeps_results(
    channel: grpc.aio.Channel, peer: Peer
) -> None:
    """Cancel ends the run at once with its results kept; nodes are told; late results change nothing."""
    api = api_of(channel)
    link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
    await register(link, slots=3)
    run = await create(api, {"sessions": 10})
    envelopes = await peer.collect(3)
    assert len(envelopes) == 3
    await peer.report(envelopes[:2])
    cancelled = (await api.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id), timeout=5)).run
    assert cancelled.status == runs_pb2.RUN_STATUS_CANCELLED
    assert (
        cancelled.counters.succeeded,
        cancelled.counters.cancelled,
        cancelled.counters.in_flight,
    ) == (2, 8, 0)
    beat = await link.Heartbeat(
        node_link_pb2.HeartbeatRequest(node_id="peer", state=nodes_pb2.NODE_STATE_READY, slots=3),
        timeout=5,
    )
    assert run.id in [command.cancel_run for command in beat.commands]
    # Envelopes sent before the cancel may still arrive (a node drops them); reporting them,
    # like the in-flight session's late result, is stored but changes no counter.
    stragglers = envelopes[2:] + await peer.fetch(timeout=0.5)
    late = await peer.report(stragglers)
    assert all(s.new for s in late.stored)
    after = await get(api, run.id)
    assert (after.status, after.counters.succeeded, after.counters.cancelled) == (
        runs_pb2.RUN_STATUS_CANCELLED,
        2,
        8,
    )
    assert await peer.fetch(timeout=0.5) == []
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await api.CancelRun(runs_pb2.CancelRunRequest(run_id=run.id), timeout=5)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_per_host_rate_limit_holds_under_a_fast_run(
    channel: grpc.aio.Channel, peer: Peer, scheduler: SchedulerService
) -> None:
    """At 10 starts/s per host with burst 2, 12 fast sessions on 20 slots are never dispatched
    faster (the dispatch times the scheduler recorded, not arrival times a loaded machine
    bunches up)."""
    from sqlalchemy import select

    from services.scheduler._models import JobRow

    api = api_of(channel)
    await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=20)
    run = await create(api, {"sessions": 12, "limits": {"per_host_rate": 10, "per_host_burst": 2}})
    done = 0
    while done < 12:
        envelopes = await peer.fetch(batch=20, timeout=5)
        await peer.report(envelopes)
        done += len(envelopes)
    async with scheduler.db.read() as session:
        dispatched = await session.scalars(
            select(JobRow.dispatched_at).where(JobRow.run_id == run.id)
        )
        times = sorted(moment.timestamp() for moment in dispatched)
    # Token bucket: by the i-th start, at most burst + rate·elapsed tokens were available.
    for position, arrived in enumerate(times):
        assert position + 1 <= 2 + 10 * (arrived - times[0]) + 1, f"start {position} came too early"
    assert times[-1] - times[0] >= 0.9
    await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)


async def test_host_backoff_after_errors_and_operator_reset(
    channel: grpc.aio.Channel, peer: Peer
) -> None:
    """A navigation error backs the host off; ListHosts shows it; ResetHostBackoff ends it."""
    api = api_of(channel)
    await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=1)
    run = await create(api, {"sessions": 2, "retry": {"max_attempts": 1}})
    await peer.report(
        await peer.fetch(timeout=5), Outcome.NAVIGATION_ERROR, ErrorClass.TRANSIENT, status=0
    )
    hosts = await api.ListHosts(nodes_pb2.ListHostsRequest(), timeout=5)
    assert [(h.host, h.consecutive_errors) for h in hosts.hosts] == [("http://127.0.0.1:9", 1)]
    assert await peer.fetch(timeout=1.0) == []  # the host rests 5 s before the second session
    reset = await api.ResetHostBackoff(
        nodes_pb2.ResetHostBackoffRequest(host="127.0.0.1"), timeout=5
    )
    assert [(h.host, h.consecutive_errors) for h in reset.reset] == [("http://127.0.0.1:9", 0)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await api.ResetHostBackoff(nodes_pb2.ResetHostBackoffRequest(host="nosuch.example"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    second = await peer.fetch(timeout=3)
    assert [e.index for e in second] == [1]
    await peer.report(second)
    await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)


async def test_priority_splits_capacity(channel: grpc.aio.Channel, peer: Peer) -> None:
    """With 8 slots, a priority-2 run gets 6 and a priority-0 run 2 when both start together."""
    api = api_of(channel)
    low = await create(api, {"sessions": 50, "priority": 0})
    high = await create(api, {"sessions": 50, "priority": 2})
    await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=8)
    envelopes = await peer.fetch(batch=20, timeout=5)
    await asyncio.sleep(0.3)
    envelopes += await peer.fetch(batch=20, timeout=0.5)
    by_run = {low.id: 0, high.id: 0}
    for envelope in envelopes:
        by_run[envelope.run_id] += 1
    assert by_run == {low.id: 2, high.id: 6}


async def test_expedite_starts_a_paced_run_now(channel: grpc.aio.Channel, peer: Peer) -> None:
    """A run paced over an hour sends its first session only; expedite sends the rest at once."""
    api = api_of(channel)
    await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=10)
    run = await create(
        api,
        {"sessions": 4, "seed": 1, "pacing": {"mode": "window", "window": "3600s", "jitter": 0}},
    )
    first = await peer.fetch(timeout=5)
    assert [e.index for e in first] == [0]
    assert await peer.fetch(timeout=0.5) == []
    await api.ExpediteRun(runs_pb2.ExpediteRunRequest(run_id=run.id), timeout=5)
    rest: list[JobEnvelope] = []
    for _ in range(5):
        rest += await peer.fetch(timeout=3)
        if len(rest) >= 3:
            break
    assert sorted(e.index for e in rest) == [1, 2, 3]
    current = await get(api, run.id)
    assert current.counters.dispatched == 4


async def test_matrix_cells_reach_envelopes_and_stats(
    channel: grpc.aio.Channel, peer: Peer
) -> None:
    """10 sessions at 70/30 over two devices: 7 and 3 envelopes carry their cell; stats split by cell."""
    api = api_of(channel)
    await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=10)
    matrix = {
        "devices": [{"name": "Desktop Chrome", "weight": 7}, {"name": "Pixel 7", "weight": 3}]
    }
    run = await create(api, {"sessions": 10, "matrix": matrix})
    envelopes = await peer.collect(10)
    await peer.report(envelopes)
    devices = sorted(e.cell.device for e in envelopes)
    assert devices == ["Desktop Chrome"] * 7 + ["Pixel 7"] * 3
    # Interleaved: the first half of the run already holds both devices.
    assert {e.cell.device for e in envelopes if e.index < 5} == {"Desktop Chrome", "Pixel 7"}
    await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)
    stats = (await api.GetRunStats(runs_pb2.GetRunStatsRequest(run_id=run.id), timeout=5)).stats
    assert sorted((c.results, c.cell.split(" / ")[0]) for c in stats.cells) == [
        (3, "Pixel 7"),
        (7, "Desktop Chrome"),
    ]


async def test_million_session_run_is_created_without_jobs(
    channel: grpc.aio.Channel, scheduler: SchedulerService
) -> None:
    """Creating a 1,000,000-session run stores one row: jobs appear only as they are dispatched."""
    from sqlalchemy import func, select

    from services.scheduler._models import JobRow

    api = api_of(channel)
    run = await create(
        api,
        {
            "sessions": 1_000_000,
            "matrix": {"devices": [{"name": "Pixel 7"}, {"name": "iPhone 13"}]},
        },
    )
    assert run.counters.planned == 1_000_000
    async with scheduler.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(JobRow)) == 0
    listed = await api.ListJobs(runs_pb2.ListJobsRequest(run_id=run.id), timeout=5)
    assert list(listed.jobs) == []


async def test_stats_report_measurement_percentiles(channel: grpc.aio.Channel, peer: Peer) -> None:
    """Vitals, bytes and requests reported by nodes are stored, read back and summed up as p50/p95/p99."""
    api = api_of(channel)
    await register(node_link_pb2_grpc.NodeLinkServiceStub(channel), slots=20)
    run = await create(api, {"sessions": 20})
    envelopes = await peer.collect(20)

    def measured(e: JobEnvelope) -> dict[str, Any]:
        n = e.index + 1  # 1..20; the last session measured nothing, as a failed page would
        if n == 20:
            return {}
        return {
            "vitals": WebVitals(ttfb_ms=n, fcp_ms=10 * n, lcp_ms=20 * n, cls=0.01 * e.index),
            "bytes_transferred": 1000 * n,
            "request_count": n,
            "console_errors": (f"error {n}",),
        }

    await peer.report(envelopes, measured=measured)
    await wait_for_status(api, run.id, runs_pb2.RUN_STATUS_COMPLETED)
    stats = (await api.GetRunStats(runs_pb2.GetRunStatsRequest(run_id=run.id), timeout=5)).stats
    metrics = {m.name: (m.p50, m.p95, m.p99, m.count) for m in stats.metrics}
    # Nearest rank over the 19 measured values 1..19 (scaled): p50 is the 10th, p95/p99 the 19th.
    assert metrics["lcp_ms"] == (200, 380, 380, 19)
    assert metrics["ttfb_ms"] == (10, 19, 19, 19)
    assert metrics["bytes"] == (10_000, 19_000, 19_000, 19)
    assert metrics["requests"] == (10, 19, 19, 19)
    assert metrics["cls"][0] == pytest.approx(0.09) and metrics["cls"][3] == 19
    assert "load_ms" not in metrics  # no session reported a load time
    page = await api.ListResults(results_pb2.ListResultsRequest(run_id=run.id), timeout=5)
    first = next(r for r in page.results if r.index == 0)
    assert (first.vitals.lcp_ms, first.bytes_transferred, first.request_count) == (20, 1000, 1)
    assert list(first.console_errors) == ["error 1"]

"""kill -9 of the node's Chromium mid-session, through the whole stack: retried, nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from bench._procs import browser_pids
from cli._stack import Stack
from demo import DemoSite
from smartfleet.v1 import common_pb2, fleet_service_pb2_grpc, nodes_pb2, results_pb2, runs_pb2
from tests.e2e.test_stack import metadata

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with Stack(
        data_dir=tmp_path / "stack",
        gateway_port=0,
        scheduler_port=0,
        node_slots=2,
        env={"SMARTFLEET_ACK_WAIT": "5s", "SMARTFLEET_HEARTBEAT_INTERVAL": "500ms"},
    ) as running:
        yield running


async def eventually(check: Callable[[], Any], *, what: str, timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return outcome
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def slow_spec(url: str, *, sessions: int) -> runs_pb2.RunSpec:
    return runs_pb2.RunSpec(
        name="node-recovery",
        targets=[url],
        sessions=sessions,
        limits=runs_pb2.Limits(
            max_concurrency=2, session_timeout=duration_pb2.Duration(seconds=30)
        ),
        retry=runs_pb2.RetryPolicy(max_attempts=3, backoff=[duration_pb2.Duration(seconds=1)]),
    )


async def run_to_end(
    api: fleet_service_pb2_grpc.FleetServiceStub, stack: Stack, run_id: str
) -> runs_pb2.Run:
    last = None
    async for update in api.WatchRun(
        runs_pb2.WatchRunRequest(run_id=run_id), metadata=metadata(stack), timeout=180
    ):
        last = update.run
    assert last is not None
    return last


async def all_results(
    api: fleet_service_pb2_grpc.FleetServiceStub, stack: Stack, run_id: str
) -> list[results_pb2.SessionResult]:
    page = await api.ListResults(
        results_pb2.ListResultsRequest(run_id=run_id, page_size=500),
        metadata=metadata(stack),
        timeout=10,
    )
    assert not page.next_page_token
    return list(page.results)


async def test_browser_killed_mid_session_is_retried_and_node_keeps_serving(
    stack: Stack, demo_site: DemoSite
) -> None:
    """kill -9 of Chromium mid-session: attempt 1 is browser_crash, attempt 2 ok, one ok per job."""
    node_pid = stack.node_pid
    assert node_pid is not None
    channel = grpc.aio.insecure_channel(stack.gateway_addr)
    async with channel:
        api = fleet_service_pb2_grpc.FleetServiceStub(channel)
        spec = slow_spec(f"{demo_site.url}/slow?ms=2500", sessions=4)
        run = (
            await api.CreateRun(
                runs_pb2.CreateRunRequest(spec=spec, start=True),
                metadata=metadata(stack),
                timeout=10,
            )
        ).run
        await eventually(lambda: demo_site.hits.get("/slow"), what="a session mid-navigation")
        browsers = browser_pids(node_pid)
        assert len(browsers) == 1, f"expected the node's one shared browser, found {browsers}"
        os.kill(browsers[0], signal.SIGKILL)

        final = await run_to_end(api, stack, run.id)
        results = await all_results(api, stack, run.id)

        # The node relaunched its browser and still serves: a second run completes on it.
        relaunched = browser_pids(node_pid)
        assert relaunched and browsers[0] not in relaunched
        again = (
            await api.CreateRun(
                runs_pb2.CreateRunRequest(
                    spec=slow_spec(f"{demo_site.url}/about", sessions=2), start=True
                ),
                metadata=metadata(stack),
                timeout=10,
            )
        ).run
        after = await run_to_end(api, stack, again.id)
        nodes = await api.ListNodes(
            nodes_pb2.ListNodesRequest(), metadata=metadata(stack), timeout=10
        )

    assert final.status == runs_pb2.RUN_STATUS_COMPLETED
    assert (final.counters.succeeded, final.counters.failed, final.counters.dead) == (4, 0, 0)
    crashed = [r for r in results if r.outcome == common_pb2.OUTCOME_BROWSER_CRASH]
    assert crashed, [(r.job_id, r.attempt, r.outcome, r.error) for r in results]
    for result in crashed:
        assert (result.attempt, result.error_class) == (1, common_pb2.ERROR_CLASS_TRANSIENT)
        retried = [r for r in results if r.job_id == result.job_id and r.attempt == 2]
        assert [r.outcome for r in retried] == [common_pb2.OUTCOME_OK]
        assert retried[0].node_id == stack.node_id
    ok_per_job: dict[str, int] = {}
    for result in results:
        if result.outcome == common_pb2.OUTCOME_OK:
            ok_per_job[result.job_id] = ok_per_job.get(result.job_id, 0) + 1
    assert len(ok_per_job) == 4 and set(ok_per_job.values()) == {1}
    assert len(results) == 4 + len(crashed), [
        (r.job_id, r.attempt, r.outcome, r.error) for r in results
    ]

    assert stack.node_pid == node_pid  # the same node process, never restarted
    os.kill(node_pid, 0)
    assert after.status == runs_pb2.RUN_STATUS_COMPLETED and after.counters.succeeded == 2
    [node] = nodes.nodes
    assert node.info.node_id == stack.node_id and node.state == nodes_pb2.NODE_STATE_READY

"""The whole stack as `smartctl up` starts it: NATS, scheduler on SQLite, gateway, one browser node."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cli._stack import Stack
from demo import DemoSite
from smartfleet.v1 import fleet_service_pb2_grpc, runs_pb2

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # A short ack wait so a killed node's jobs come back within seconds.
    async with Stack(
        data_dir=tmp_path / "stack",
        gateway_port=0,
        scheduler_port=0,
        node_slots=4,
        env={"SMARTFLEET_ACK_WAIT": "3s", "SMARTFLEET_HEARTBEAT_INTERVAL": "500ms"},
    ) as running:
        yield running


def fleet(stack: Stack) -> tuple[grpc.aio.Channel, fleet_service_pb2_grpc.FleetServiceStub]:
    channel = grpc.aio.insecure_channel(stack.gateway_addr)
    return channel, fleet_service_pb2_grpc.FleetServiceStub(channel)


def metadata(stack: Stack) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {stack.token}"),)


def stored_results(stack: Stack, run_id: str) -> tuple[int, int]:
    """(result rows, distinct jobs) for the run, read straight from the SQLite file."""
    with sqlite3.connect(stack.data_dir / "smartfleet.db") as db:
        rows, jobs = db.execute(
            "SELECT count(*), count(DISTINCT job_id) FROM results WHERE run_id = ?", (run_id,)
        ).fetchone()
    return rows, jobs


async def wait_final(
    api: fleet_service_pb2_grpc.FleetServiceStub, stack: Stack, run_id: str
) -> runs_pb2.Run:
    last = None
    async for update in api.WatchRun(
        runs_pb2.WatchRunRequest(run_id=run_id), metadata=metadata(stack), timeout=180
    ):
        last = update.run
    assert last is not None
    return last


async def test_fifty_sessions_end_to_end(stack: Stack, demo_site: DemoSite) -> None:
    """A 50-session run through gateway → scheduler → JetStream → node completes with exactly 50 results."""
    channel, api = fleet(stack)
    async with channel:
        spec = runs_pb2.RunSpec(
            name="e2e",
            targets=[
                f"{demo_site.url}/",
                f"{demo_site.url}/about",
                f"{demo_site.url}/redirect-chain",
            ],
            sessions=50,
        )
        run = (
            await api.CreateRun(
                runs_pb2.CreateRunRequest(spec=spec, start=True),
                metadata=metadata(stack),
                timeout=10,
            )
        ).run
        final = await wait_final(api, stack, run.id)
        stats = (
            await api.GetRunStats(
                runs_pb2.GetRunStatsRequest(run_id=run.id), metadata=metadata(stack), timeout=10
            )
        ).stats
    assert final.status == runs_pb2.RUN_STATUS_COMPLETED
    assert (final.counters.succeeded, final.counters.failed) == (50, 0)
    assert stats.results == 50 and stats.success_rate == 1.0
    assert stored_results(stack, run.id) == (50, 50)
    # Traffic is marked: the product token on the User-Agent and the run header.
    assert any("Smartfleet/" in agent for agent in demo_site.user_agents)
    assert run.id in demo_site.run_headers


async def test_runs_can_require_the_browser_version(
    stack: Stack, demo_site: DemoSite, tmp_path: Path
) -> None:
    """`nodes ls` shows the node's browser=<major> label; a run placed on it completes there."""
    nodes: list[dict[str, Any]] = []
    for _ in range(60):  # the node registers a moment after the stack is up
        listed = await asyncio.to_thread(smartctl, stack, "nodes", "ls", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        nodes = json.loads(listed.stdout)["nodes"]
        if nodes and "browser" in nodes[0]["info"].get("labels", {}):
            break
        await asyncio.sleep(0.5)
    (node,) = nodes
    major = node["info"]["labels"]["browser"]
    assert node["info"]["browser_versions"]["chromium"].startswith(f"{major}.")
    spec_file = tmp_path / "pinned.yaml"
    spec_file.write_text(
        f"targets: [{demo_site.url}/about]\nsessions: 3\n"
        f"matrix: {{labels: [{{labels: {{browser: '{major}'}}}}]}}\n"
    )
    created = await asyncio.to_thread(
        smartctl, stack, "run", "create", "-f", str(spec_file), "--start", "-o", "json"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    channel, api = fleet(stack)
    async with channel:
        final = await wait_final(api, stack, json.loads(created.stdout)["run_id"])
    assert (final.counters.succeeded, final.counters.failed) == (3, 0)


async def test_node_killed_mid_run_still_gives_exact_results(
    stack: Stack, demo_site: DemoSite
) -> None:
    """kill -9 of the node mid-run, then a restart: JetStream redelivers, ingestion dedups, 40 of 40."""
    channel, api = fleet(stack)
    async with channel:
        spec = runs_pb2.RunSpec(name="chaos", targets=[f"{demo_site.url}/slow?ms=600"], sessions=40)
        run = (
            await api.CreateRun(
                runs_pb2.CreateRunRequest(spec=spec, start=True),
                metadata=metadata(stack),
                timeout=10,
            )
        ).run
        for _ in range(600):
            current = (
                await api.GetRun(
                    runs_pb2.GetRunRequest(run_id=run.id), metadata=metadata(stack), timeout=10
                )
            ).run
            if current.counters.succeeded >= 6:
                break
            await asyncio.sleep(0.1)
        assert 6 <= current.counters.succeeded < 40, "the run should be mid-way when the node dies"
        await stack.kill_node(signal.SIGKILL)
        await asyncio.sleep(1.0)
        await stack.start_node()
        final = await wait_final(api, stack, run.id)
    assert final.status == runs_pb2.RUN_STATUS_COMPLETED
    assert (final.counters.succeeded, final.counters.failed) == (40, 0)
    assert stored_results(stack, run.id) == (40, 40)


def smartctl(
    stack: Stack, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SMARTFLEET_GATEWAY_ADDR": stack.gateway_addr,
        "SMARTFLEET_TOKEN": token or stack.token,
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "smartctl"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_cli_errors_name_the_field_and_refuse_bad_tokens(
    stack: Stack, tmp_path: Path
) -> None:
    """`smartctl run create` with bad input names the field; a wrong token is refused; services keep running."""
    cases = [
        (["--target", "http://127.0.0.1/", "--sessions", "-3"], "spec.sessions"),
        (["--target", "ftp://127.0.0.1/", "--sessions", "1"], "spec.targets[0]"),
    ]
    spec_file = tmp_path / "run.yaml"
    spec_file.write_text("targets: [http://127.0.0.1/]\nsessions: 2\nsesions: 3\n")
    cases.append((["-f", str(spec_file)], "sesions"))
    for args, field in cases:
        result = await asyncio.to_thread(smartctl, stack, "run", "create", *args)
        assert result.returncode != 0, result.stdout
        assert field in result.stdout + result.stderr, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    refused = await asyncio.to_thread(smartctl, stack, "run", "ls", token="wrong-token")
    assert refused.returncode != 0
    assert "token" in (refused.stdout + refused.stderr).lower()
    listed = await asyncio.to_thread(smartctl, stack, "run", "ls", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), dict | list)

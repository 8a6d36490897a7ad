"""Artifacts through the whole stack: kept per policy, uploaded by the node, fetched by smartctl."""

from __future__ import annotations

import asyncio
import json
import zipfile
from pathlib import Path

import grpc
import pytest

from cli._stack import Stack
from demo import DemoSite
from smartfleet.v1 import artifacts_pb2, runs_pb2
from tests.e2e.test_stack import fleet, metadata, smartctl, stack, wait_final

__all__ = ["stack"]  # the fixture, shared with test_stack

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]


async def test_on_failure_artifacts_reach_smartctl(
    stack: Stack, demo_site: DemoSite, tmp_path: Path
) -> None:
    """With `on_failure`, only failed sessions keep a screenshot, trace and HAR; smartctl lists and downloads them whole."""
    channel, api = fleet(stack)
    async with channel:
        spec = runs_pb2.RunSpec(
            name="artifacts",
            targets=[f"{demo_site.url}/about", f"{demo_site.url}/missing"],
            sessions=4,
            artifacts=runs_pb2.ARTIFACT_POLICY_ON_FAILURE,
        )
        run = (
            await api.CreateRun(
                runs_pb2.CreateRunRequest(spec=spec, start=True), metadata=metadata(stack)
            )
        ).run
        final = await wait_final(api, stack, run.id)
        assert (final.counters.succeeded, final.counters.failed) == (2, 2)

        listed = await asyncio.to_thread(smartctl, stack, "run", "artifacts", run.id, "-o", "json")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        found = json.loads(listed.stdout)["artifacts"]
        by_job: dict[str, set[str]] = {}
        for artifact in found:
            by_job.setdefault(artifact["job_id"], set()).add(artifact["name"])
        # Sessions 1 and 3 hit /missing (target i mod 2): exactly those two jobs kept artifacts.
        assert len(by_job) == 2, found
        assert all(
            names == {"failure.png", "trace.zip", "session.har"} for names in by_job.values()
        )

        job = next(iter(by_job))
        out = tmp_path / "fetched"
        fetched = await asyncio.to_thread(
            smartctl, stack, "run", "artifacts", run.id, "--job", job, "--out", str(out)
        )
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert "downloaded 3 artifacts" in fetched.stderr
        folder = out / job / "1"
        assert (folder / "failure.png").read_bytes().startswith(b"\x89PNG")
        with zipfile.ZipFile(folder / "trace.zip") as trace:
            assert any(name.endswith(".trace") for name in trace.namelist())
        har = json.loads((folder / "session.har").read_text())
        assert any(entry["request"]["url"].endswith("/missing") for entry in har["log"]["entries"])
        sizes = {a["name"]: int(a["size_bytes"]) for a in found if a["job_id"] == job}
        assert {p.name: p.stat().st_size for p in folder.iterdir()} == sizes

        # Nothing left behind on the node's side once uploaded.
        node_dir = stack.data_dir / "node-artifacts"
        assert not node_dir.exists() or not any(p.is_file() for p in node_dir.rglob("*"))

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            async for _ in api.GetArtifact(
                artifacts_pb2.GetArtifactRequest(key=f"{run.id}/{job}/1/nothing.png"),
                metadata=metadata(stack),
            ):
                pass
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            async for _ in api.GetArtifact(
                artifacts_pb2.GetArtifactRequest(key="../../etc/passwd"), metadata=metadata(stack)
            ):
                pass
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT

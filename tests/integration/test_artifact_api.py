"""The scheduler's artifact RPCs over real gRPC: nodes upload, gateways list and fetch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from services.common.config import SchedulerSettings
from services.common.nats_server import EmbeddedNatsServer
from services.scheduler import SchedulerService
from smartfleet.v1 import (
    artifacts_pb2,
    fleet_service_pb2_grpc,
    node_link_pb2,
    node_link_pb2_grpc,
    runs_pb2,
)


@pytest.fixture
async def scheduler(
    nats_server: EmbeddedNatsServer, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[SchedulerService]:
    service = SchedulerService(
        SchedulerSettings(
            scheduler_listen="127.0.0.1:0",
            database_url=sqlite_url,
            database_upgrade=True,
            nats_url=nats_server.url,
            artifact_dir=str(tmp_path / "store"),
            artifact_max_upload_mb=1,
        )
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=timedelta(seconds=0.5))


def upload(run_id: str, name: str, *parts: bytes, header_first: bool = True) -> list:
    header = node_link_pb2.PutArtifactRequest(
        header=node_link_pb2.ArtifactHeader(
            node_id="n1", run_id=run_id, job_id="job-1", attempt=1, name=name
        )
    )
    data = [node_link_pb2.PutArtifactRequest(data=part) for part in parts]
    return [header, *data] if header_first else [*data, header]


async def test_upload_list_fetch_and_refusals(scheduler: SchedulerService, tmp_path: Path) -> None:
    """An upload is listed and fetched whole; bad uploads get INVALID_ARGUMENT, NOT_FOUND or RESOURCE_EXHAUSTED and are not stored."""
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        api = fleet_service_pb2_grpc.FleetServiceStub(channel)
        link = node_link_pb2_grpc.NodeLinkServiceStub(channel)
        run = (
            await api.CreateRun(
                runs_pb2.CreateRunRequest(
                    spec=runs_pb2.RunSpec(targets=["http://127.0.0.1/"], sessions=1)
                )
            )
        ).run
        stored = await link.PutArtifact(iter(upload(run.id, "trace.zip", b"abc", b"def")))
        assert (stored.key, stored.size_bytes) == (f"{run.id}/job-1/1/trace.zip", 6)

        listed = await api.ListArtifacts(artifacts_pb2.ListArtifactsRequest(run_id=run.id))
        assert [(a.name, a.job_id, a.attempt, a.size_bytes) for a in listed.artifacts] == [
            ("trace.zip", "job-1", 1, 6)
        ]
        chunks = [
            c async for c in api.GetArtifact(artifacts_pb2.GetArtifactRequest(key=stored.key))
        ]
        assert chunks[0].artifact.key == stored.key
        assert b"".join(c.data for c in chunks) == b"abcdef"

        refusals = [
            (upload(run.id, "x.png", b"1", header_first=False), grpc.StatusCode.INVALID_ARGUMENT),
            (upload(run.id, "../x.png", b"1"), grpc.StatusCode.INVALID_ARGUMENT),
            (upload("no-such-run", "x.png", b"1"), grpc.StatusCode.NOT_FOUND),
            (
                upload(run.id, "big.bin", b"x" * 600_000, b"x" * 600_000),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            ),
        ]
        for messages, code in refusals:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await link.PutArtifact(iter(messages))
            assert refused.value.code() is code, refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await api.ListArtifacts(artifacts_pb2.ListArtifactsRequest(run_id="no-such-run"))
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND

        again = await api.ListArtifacts(artifacts_pb2.ListArtifactsRequest(run_id=run.id))
        assert [a.name for a in again.artifacts] == ["trace.zip"]
        files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
        assert [p.name for p in files] == ["trace.zip"]

"""Artifact RPCs: listing and fetching for gateways, uploading for nodes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import InvalidArgument
from services.scheduler import _paging as paging
from services.scheduler._artifacts import ArtifactStore, StoredArtifact
from services.scheduler._runs import RunStore
from smartfleet.v1 import artifacts_pb2, node_link_pb2

logger = logging.getLogger(__name__)

MAX_LIST = 10_000


def artifact_to_pb(artifact: StoredArtifact) -> artifacts_pb2.Artifact:
    created = Timestamp()
    created.FromDatetime(artifact.created_at)
    return artifacts_pb2.Artifact(
        key=artifact.key,
        run_id=artifact.run_id,
        job_id=artifact.job_id,
        attempt=artifact.attempt,
        name=artifact.name,
        size_bytes=artifact.size_bytes,
        created_at=created,
    )


class ArtifactsApi:
    def __init__(self, *, artifacts: ArtifactStore, runs: RunStore) -> None:
        self._artifacts = artifacts
        self._runs = runs

    async def ListArtifacts(
        self, request: artifacts_pb2.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.ListArtifactsResponse:
        if not request.run_id:
            raise InvalidArgument("run_id", "is required")
        limit = paging.page_limit(request.page_size, default=MAX_LIST, maximum=MAX_LIST)
        filters = {"r": request.run_id, "j": request.job_id}
        after = paging.decode(request.page_token, "artifacts", filters)
        if after is not None and not isinstance(after, str):
            raise InvalidArgument("page_token", "is not a page token of this listing")
        await self._runs.get(request.run_id)  # NOT_FOUND for a run that does not exist
        page, next_after, total = await self._artifacts.listing(
            request.run_id, job_id=request.job_id, after_key=after or "", limit=limit
        )
        return artifacts_pb2.ListArtifactsResponse(
            artifacts=[artifact_to_pb(item) for item in page],
            next_page_token=paging.encode("artifacts", next_after, filters) if next_after else "",
            total_bytes=total,
        )

    async def GetArtifact(
        self, request: artifacts_pb2.GetArtifactRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[artifacts_pb2.GetArtifactResponse]:
        artifact, chunks = await self._artifacts.read(request.key)
        first = True
        async for data in chunks:
            if first:
                yield artifacts_pb2.GetArtifactResponse(
                    artifact=artifact_to_pb(artifact), data=data
                )
                first = False
            else:
                yield artifacts_pb2.GetArtifactResponse(data=data)
        if first:  # an empty file still says what it is
            yield artifacts_pb2.GetArtifactResponse(artifact=artifact_to_pb(artifact))


class ArtifactLinkApi:
    def __init__(self, *, artifacts: ArtifactStore, runs: RunStore) -> None:
        self._artifacts = artifacts
        self._runs = runs

    async def PutArtifact(
        self,
        request_iterator: AsyncIterator[node_link_pb2.PutArtifactRequest],
        context: grpc.aio.ServicerContext,
    ) -> node_link_pb2.PutArtifactResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("header", "the first message must name the artifact")
        header = first.header
        if not header.run_id:
            raise InvalidArgument("header.run_id", "is required")
        await self._runs.get(header.run_id)  # only artifacts of runs that exist

        async def chunks() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                if message.WhichOneof("part") != "data":
                    raise InvalidArgument("data", "only the first message may be a header")
                yield message.data

        stored = await self._artifacts.put(
            run_id=header.run_id,
            job_id=header.job_id,
            attempt=header.attempt,
            name=header.name,
            chunks=chunks(),
            declared_size=header.size_bytes,
        )
        logger.debug(
            "node %s stored artifact %s (%d bytes)", header.node_id, stored.key, stored.size_bytes
        )
        return node_link_pb2.PutArtifactResponse(key=stored.key, size_bytes=stored.size_bytes)

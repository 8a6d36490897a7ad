"""The Fleet API client: bearer token, a deadline on every call, gRPC errors as CliError."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, NoReturn, TypeVar

import grpc

from cli._config import Connection
from cli._errors import CliError
from cli._output import debug
from smartfleet.v1 import (
    artifacts_pb2,
    common_pb2,
    fleet_service_pb2,
    fleet_service_pb2_grpc,
    nodes_pb2,
    results_pb2,
    runs_pb2,
)

ResponseT = TypeVar("ResponseT")

# A watch stream is re-opened after this long: each call keeps a deadline, a watch can last days.
WATCH_SEGMENT_S = 300.0
# Consecutive failed re-opens of a watch before giving up.
WATCH_RECONNECTS = 5


class FleetClient:
    """A synchronous client of the public Fleet API for one gateway."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
        if connection.ca_file:
            try:
                with open(connection.ca_file, "rb") as handle:
                    root = handle.read()
            except OSError as error:
                raise CliError(
                    f"cannot read the CA file {connection.ca_file}: {error.strerror or error}"
                ) from error
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(connection.gateway, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(connection.gateway, options=options)
        self._stub = fleet_service_pb2_grpc.FleetServiceStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {connection.token}"),) if connection.token else ()
        )

    @property
    def gateway(self) -> str:
        return self._connection.gateway

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_run(
        self,
        spec: runs_pb2.RunSpec,
        *,
        start: bool = False,
        labels: dict[str, str] | None = None,
        request_id: str = "",
    ) -> runs_pb2.Run:
        request = runs_pb2.CreateRunRequest(
            spec=spec, start=start, labels=labels or {}, request_id=request_id
        )
        return self._unary(self._stub.CreateRun, request).run

    def plan_run(self, spec: runs_pb2.RunSpec) -> runs_pb2.RunPlanSummary:
        """The plan of a spec, validated by the server, without creating anything."""
        request = runs_pb2.CreateRunRequest(spec=spec, validate_only=True)
        return self._unary(self._stub.CreateRun, request).plan

    def start_run(self, run_id: str) -> runs_pb2.Run:
        return self._unary(self._stub.StartRun, runs_pb2.StartRunRequest(run_id=run_id)).run

    def get_run(self, run_id: str) -> runs_pb2.Run:
        return self._unary(self._stub.GetRun, runs_pb2.GetRunRequest(run_id=run_id)).run

    def list_runs(self, *, limit: int = 20) -> list[runs_pb2.Run]:
        response = self._unary(self._stub.ListRuns, runs_pb2.ListRunsRequest(page_size=limit))
        return list(response.runs)

    def get_run_stats(self, run_id: str) -> runs_pb2.RunStats:
        request = runs_pb2.GetRunStatsRequest(run_id=run_id)
        return self._unary(self._stub.GetRunStats, request).stats

    def pause_run(self, run_id: str) -> runs_pb2.Run:
        return self._unary(self._stub.PauseRun, runs_pb2.PauseRunRequest(run_id=run_id)).run

    def resume_run(self, run_id: str) -> runs_pb2.Run:
        return self._unary(self._stub.ResumeRun, runs_pb2.ResumeRunRequest(run_id=run_id)).run

    def cancel_run(self, run_id: str) -> runs_pb2.Run:
        return self._unary(self._stub.CancelRun, runs_pb2.CancelRunRequest(run_id=run_id)).run

    def expedite_run(self, run_id: str) -> runs_pb2.Run:
        request = runs_pb2.ExpediteRunRequest(run_id=run_id)
        return self._unary(self._stub.ExpediteRun, request).run

    def list_jobs(
        self,
        run_id: str,
        *,
        statuses: Sequence[runs_pb2.JobStatus.ValueType] = (),
        limit: int = 100,
    ) -> list[runs_pb2.Job]:
        """Up to `limit` jobs of the run in index order (pages followed as needed)."""
        jobs: list[runs_pb2.Job] = []
        token = ""
        while len(jobs) < limit:
            request = runs_pb2.ListJobsRequest(
                run_id=run_id,
                statuses=statuses,
                page_size=min(5000, limit - len(jobs)),
                page_token=token,
            )
            response = self._unary(self._stub.ListJobs, request)
            jobs.extend(response.jobs)
            token = response.next_page_token
            if not token:
                break
        return jobs

    def iter_results(
        self,
        run_id: str,
        *,
        page: int = 1000,
        outcomes: Sequence[common_pb2.Outcome.ValueType] = (),
    ) -> Iterator[results_pb2.SessionResult]:
        """Every stored result of a run, in the order stored, a page per call."""
        token = ""
        while True:
            request = results_pb2.ListResultsRequest(
                run_id=run_id, page_size=page, page_token=token, outcomes=outcomes
            )
            response = self._unary(self._stub.ListResults, request)
            yield from response.results
            token = response.next_page_token
            if not token:
                return

    def iter_artifacts(self, run_id: str, *, job_id: str = "") -> Iterator[artifacts_pb2.Artifact]:
        """Every stored artifact of a run (or one job), in key order, a page per call."""
        token = ""
        while True:
            request = artifacts_pb2.ListArtifactsRequest(
                run_id=run_id, job_id=job_id, page_token=token
            )
            response = self._unary(self._stub.ListArtifacts, request)
            yield from response.artifacts
            token = response.next_page_token
            if not token:
                return

    def download_artifact(
        self, key: str, handle: BinaryIO, *, on_bytes: Callable[[int], None] | None = None
    ) -> int:
        """Write one artifact's bytes to `handle`; returns how many were written."""
        written = 0
        try:
            # A large artifact takes longer than one call's deadline: allow 1 MB/s on top.
            for chunk in self._stub.GetArtifact(
                artifacts_pb2.GetArtifactRequest(key=key),
                timeout=self._connection.timeout + 600,
                metadata=self._metadata,
            ):
                handle.write(chunk.data)
                written += len(chunk.data)
                if on_bytes is not None:
                    on_bytes(len(chunk.data))
        except grpc.RpcError as error:
            self._raise(error)
        return written

    def list_hosts(self) -> list[nodes_pb2.HostBackoff]:
        return list(self._unary(self._stub.ListHosts, nodes_pb2.ListHostsRequest()).hosts)

    def reset_host_backoff(self, host: str) -> list[nodes_pb2.HostBackoff]:
        request = nodes_pb2.ResetHostBackoffRequest(host=host)
        return list(self._unary(self._stub.ResetHostBackoff, request).reset)

    def list_nodes(self) -> list[nodes_pb2.Node]:
        response = self._unary(self._stub.ListNodes, nodes_pb2.ListNodesRequest())
        return list(response.nodes)

    def cordon_node(self, node_id: str) -> nodes_pb2.Node:
        request = nodes_pb2.CordonNodeRequest(node_id=node_id)
        return self._unary(self._stub.CordonNode, request).node

    def drain_node(self, node_id: str) -> nodes_pb2.Node:
        return self._unary(self._stub.DrainNode, nodes_pb2.DrainNodeRequest(node_id=node_id)).node

    def uncordon_node(self, node_id: str) -> nodes_pb2.Node:
        request = nodes_pb2.UncordonNodeRequest(node_id=node_id)
        return self._unary(self._stub.UncordonNode, request).node

    def server_info(self) -> list[fleet_service_pb2.ServerComponent]:
        request = fleet_service_pb2.GetServerInfoRequest()
        return list(self._unary(self._stub.GetServerInfo, request).components)

    def watch_run(self, run_id: str, *, deadline: float | None = None) -> Iterator[runs_pb2.Run]:
        """Snapshots of the run until it is final, or until `deadline` (time.monotonic()).

        Re-opens the stream when a segment ends; past the deadline it simply stops.
        """
        delivered = False
        failures = 0
        while True:
            segment = WATCH_SEGMENT_S
            if deadline is not None:
                segment = min(segment, deadline - time.monotonic())
                if segment <= 0:
                    return
            try:
                for reply in self._stub.WatchRun(
                    runs_pb2.WatchRunRequest(run_id=run_id),
                    timeout=segment,
                    metadata=self._metadata,
                ):
                    run = reply.run
                    delivered, failures = True, 0
                    yield run
                    if is_final(run):
                        return
            except grpc.RpcError as error:
                code = _code(error)
                if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # the segment ended; the next one starts with a snapshot
                # A gateway that went away mid-watch (restart, deploy) gets a few chances.
                failures += 1
                if (
                    code is not grpc.StatusCode.UNAVAILABLE
                    or not delivered
                    or failures > WATCH_RECONNECTS
                ):
                    self._raise(error)
                time.sleep(min(2.0**failures, 10.0))
                continue
            # The server closed the stream before the run was final: read it, then watch again.
            run = self.get_run(run_id)
            if is_final(run):
                yield run
                return
            time.sleep(0.5)

    def _unary(self, method: Callable[..., ResponseT], request: object) -> ResponseT:
        started = time.monotonic()
        name = type(request).__name__
        try:
            response = method(request, timeout=self._connection.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            debug(f"{name} failed after {1000 * (time.monotonic() - started):.0f} ms")
            self._raise(error)
        debug(f"{name} answered in {1000 * (time.monotonic() - started):.0f} ms")
        return response

    def _raise(self, error: grpc.RpcError) -> NoReturn:
        raise translate_error(
            error, gateway=self._connection.gateway, timeout=self._connection.timeout
        )


FINAL_STATUSES = frozenset(
    {runs_pb2.RUN_STATUS_COMPLETED, runs_pb2.RUN_STATUS_CANCELLED, runs_pb2.RUN_STATUS_FAILED}
)


def is_final(run: runs_pb2.Run) -> bool:
    return run.status in FINAL_STATUSES


def is_completed(run: runs_pb2.Run) -> bool:
    return run.status == runs_pb2.RUN_STATUS_COMPLETED


def is_draft(run: runs_pb2.Run) -> bool:
    return run.status == runs_pb2.RUN_STATUS_DRAFT


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(error, "code", None)
    return code() if callable(code) else None


def _details(error: grpc.RpcError) -> str:
    details = getattr(error, "details", None)
    return (details() if callable(details) else None) or str(error)


def translate_error(error: grpc.RpcError, *, gateway: str, timeout: float) -> CliError:
    """The message a user can act on for a failed call; the server's own words when it has them.

    One style for every status: `<what went wrong in words>: <the server's details>`, so
    `error: invalid argument: spec.sessions: …` and `error: already exists: …` read alike.
    """
    code = _code(error)
    details = _details(error)
    if code is grpc.StatusCode.UNAVAILABLE:
        return CliError(
            f"unavailable: cannot reach the gateway at {gateway}: is `smartctl up` running? "
            f"({details})"
        )
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return CliError(
            f"unauthenticated: the gateway at {gateway} did not accept the token ({details}): "
            "pass --token, set SMARTFLEET_TOKEN or pick a context with a token file "
            "(`smartctl up` prints the token and keeps it in <data-dir>/stack.json)"
        )
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return CliError(f"permission denied: the token is not allowed to do this: {details}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(
            f"deadline exceeded: the gateway at {gateway} did not answer within {timeout:g}s"
        )
    words = code.name.lower().replace("_", " ") if code is not None else "error"
    return CliError(f"{words}: {details}")

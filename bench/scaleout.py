"""scaleout_3_vs_1_ratio: noop jobs/s with three nodes on three simulated hosts, over one node.

Three network namespaces on a bridge (198.18.0.0/24, nothing leaves the machine) are the
hosts; the scheduler (SQLite) and one nats-server sit in the root namespace on the bridge, so
every node reaches them over a real network path. One noop node runs a fast run first; then
two more nodes join (same slots each) and the same run is made again. jobs/s of each: ok
results / (last result stored - run started), from the scheduler's database file.

On one machine the three "hosts" share its cores with the scheduler, so this measures how the
orchestration spreads work over hosts (consumers, credit, reports from three links), not what
three machines would add; docs/scaling.md has the arithmetic for real hosts.

`python -m bench.scaleout [--quick]` runs it alone (root and `ip netns` needed; else it says why).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench._netns import BRIDGE_ADDRESS, Host, Network, unavailable_reason
from bench._report import Row
from bench._service import ServiceProcess
from bench.pipeline import _stored, noop_spec
from services.common.nats_server import EmbeddedNatsServer
from smartfleet.v1 import fleet_service_pb2_grpc, nodes_pb2, runs_pb2

NODE_SLOTS = 200
TERMINAL = (
    runs_pb2.RUN_STATUS_COMPLETED,
    runs_pb2.RUN_STATUS_CANCELLED,
    runs_pb2.RUN_STATUS_FAILED,
)


@dataclass(frozen=True, slots=True)
class ScaleOut:
    sessions: int
    one_node_per_s: float
    three_nodes_per_s: float
    # (succeeded, planned) of each run: a ratio of incomplete runs would mean nothing.
    completed: tuple[tuple[int, int], tuple[int, int]]

    @property
    def ratio(self) -> float:
        return self.three_nodes_per_s / self.one_node_per_s if self.one_node_per_s else 0.0

    def note(self) -> str:
        return (
            f"{self.sessions:,} noop sessions, fast: {self.three_nodes_per_s:.0f} jobs/s on "
            f"3 nodes in 3 namespaces / {self.one_node_per_s:.0f} on 1 ({NODE_SLOTS} slots each)"
        )


class _Cluster:
    def __init__(self, root: Path, network: Network) -> None:
        self.root = root
        self.network = network
        self.nats = EmbeddedNatsServer(root / "nats", host=BRIDGE_ADDRESS)
        self.database = root / "scheduler.db"
        self.scheduler: ServiceProcess | None = None
        self.nodes: list[ServiceProcess] = []
        self.api: fleet_service_pb2_grpc.FleetServiceStub | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        (self.root / "nats").mkdir(parents=True)
        await self.nats.start()
        self.scheduler = ServiceProcess(
            "services.scheduler",
            env={
                "SMARTFLEET_SCHEDULER_LISTEN": f"{BRIDGE_ADDRESS}:0",
                "SMARTFLEET_DATABASE_URL": f"sqlite+aiosqlite:///{self.database}",
                "SMARTFLEET_DATABASE_UPGRADE": "true",
                "SMARTFLEET_NATS_URL": self.nats.url,
                "SMARTFLEET_LOG_LEVEL": "WARNING",
            },
            workdir=self.root,
            name="scheduler",
        )
        address = (await self.scheduler.start())["scheduler"]
        self._channel = grpc.aio.insecure_channel(address)
        self.api = fleet_service_pb2_grpc.FleetServiceStub(self._channel)

    async def add_node(self, host: Host) -> None:
        assert self.scheduler is not None
        node = ServiceProcess(
            "services.browser_node",
            env={
                "SMARTFLEET_NODE_ID": f"noop-{host.name}",
                "SMARTFLEET_NODE_ENGINE": "noop",
                "SMARTFLEET_NODE_SLOTS": str(NODE_SLOTS),
                "SMARTFLEET_NODE_LISTEN": "127.0.0.1:0",
                "SMARTFLEET_SCHEDULER_ADDR": self.scheduler.ready["scheduler"],
                "SMARTFLEET_NATS_URL": self.nats.url,
                "SMARTFLEET_LOG_LEVEL": "WARNING",
            },
            workdir=self.root,
            name=f"node-{host.name}",
            prefix=host.exec_prefix(),
        )
        await node.start()
        self.nodes.append(node)
        await self._until_ready(len(self.nodes))

    async def _until_ready(self, count: int, *, timeout: float = 60.0) -> None:
        assert self.api is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            listed = await self.api.ListNodes(nodes_pb2.ListNodesRequest(), timeout=10)
            if sum(n.state == nodes_pb2.NODE_STATE_READY for n in listed.nodes) >= count:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{count} noop node(s) did not register within {timeout:.0f}s")

    async def jobs_per_s(self, name: str, sessions: int) -> tuple[float, int]:
        """(jobs/s, succeeded) of a fast noop run, after a small warm-up run."""
        assert self.api is not None
        for run_name, count in ((f"{name}-warmup", 500), (name, sessions)):
            run = (
                await self.api.CreateRun(
                    runs_pb2.CreateRunRequest(spec=noop_spec(run_name, count), start=True),
                    timeout=30,
                )
            ).run
            final = await self._final(run.id)
        started, stored = await asyncio.to_thread(_stored, self.database, run.id)
        last = max((row.stored_at for row in stored), default=started)
        seconds = (last - started).total_seconds()
        return (len(stored) / seconds if seconds > 0 else 0.0), final.counters.succeeded

    async def _final(self, run_id: str, *, timeout: float = 600.0) -> runs_pb2.Run:
        assert self.api is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            run = (await self.api.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=10)).run
            if run.status in TERMINAL:
                return run
            await asyncio.sleep(0.2)
        raise RuntimeError(f"run {run_id} did not finish within {timeout:.0f}s")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        await asyncio.gather(*(node.stop(timeout=10) for node in self.nodes))
        if self.scheduler is not None:
            await self.scheduler.stop(timeout=10)
        await self.nats.stop()


async def measure(root: Path, *, quick: bool, say: Callable[[str], None] = print) -> ScaleOut | str:
    """The figure, or why it cannot be measured here (no root, no `ip netns`)."""
    reason = unavailable_reason()
    if reason is not None:
        return reason
    sessions = 5_000 if quick else 20_000
    with Network(3) as network:
        cluster = _Cluster(root / "scaleout", network)
        try:
            await cluster.start()
            await cluster.add_node(network.hosts[0])
            say(f"  scale-out: {sessions:,} noop sessions on 1 node (host h1)")
            one, one_ok = await cluster.jobs_per_s("scaleout-1", sessions)
            for host in network.hosts[1:]:
                await cluster.add_node(host)
            say(f"  scale-out: {sessions:,} noop sessions on 3 nodes (hosts h1, h2, h3)")
            three, three_ok = await cluster.jobs_per_s("scaleout-3", sessions)
        finally:
            await cluster.close()
    result = ScaleOut(
        sessions=sessions,
        one_node_per_s=one,
        three_nodes_per_s=three,
        completed=((one_ok, sessions), (three_ok, sessions)),
    )
    say(f"  {result.note()}: ratio {result.ratio:.2f}")
    return result


def row(result: ScaleOut | str) -> Row:
    """The bench table's row: the ratio, or NOT MEASURED with the reason."""
    if isinstance(result, str):
        return Row("scaleout_3_vs_1_ratio", None, "report", note=f"not measured: {result}")
    return Row("scaleout_3_vs_1_ratio", result.ratio, "report", note=result.note())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5,000 sessions instead of 20,000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartfleet-scaleout-") as tmp:
        result = asyncio.run(measure(Path(tmp), quick=args.quick))
    if isinstance(result, str):
        raise SystemExit(f"scale-out not measured: {result}")
    print(f"scaleout_3_vs_1_ratio={result.ratio:.3f} ({result.note()})")


if __name__ == "__main__":
    main()

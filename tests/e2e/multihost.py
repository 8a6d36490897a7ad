"""A Smartfleet fleet on three simulated hosts, for the multi-host test.

    root namespace (198.18.0.1, the bridge): PostgreSQL (127.0.0.1:5432), schedulers A and B,
        the test itself and an in-process gateway in front of both schedulers
    h1 (198.18.0.11): nats-server 1, noop node n1, Chromium node c1, the demo site (its loopback)
    h2 (198.18.0.12): nats-server 2, noop node n2
    h3 (198.18.0.13): nats-server 3, noop node n3

The three nats-servers form one JetStream cluster and the job stream has three replicas. Each
node lists its own host's server first. The schedulers share a database of their own, created
here and dropped by `close()`, which also ends every process and removes the namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import nats
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench._netns import BRIDGE_ADDRESS, Host, Network
from bench._service import ServiceProcess
from services.common.config import GatewaySettings
from services.common.nats_server import find_nats_server
from services.gateway.server import GatewayService
from tests.conftest import POSTGRES_URL

NATS_PORT = 4222
ROUTE_PORT = 6222
DEMO_PORT = 8080
TOKEN = "multihost-token"
SCHEDULER_SERVICE = "smartfleet.v1.FleetService"


@dataclass(slots=True)
class Fleet:
    workdir: Path
    network: Network = field(default_factory=lambda: Network(3))
    nats: dict[str, ServiceProcess] = field(default_factory=dict)
    schedulers: dict[str, ServiceProcess] = field(default_factory=dict)
    scheduler_addrs: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, ServiceProcess] = field(default_factory=dict)
    others: list[ServiceProcess] = field(default_factory=list)
    database: str = ""
    gateway: GatewayService | None = None
    gateway_addr: str = ""

    @property
    def hosts(self) -> list[Host]:
        return self.network.hosts

    @property
    def database_url(self) -> str:
        return POSTGRES_URL.rsplit("/", 1)[0] + f"/{self.database}"

    @property
    def dsn(self) -> str:
        return self.database_url.replace("postgresql+asyncpg", "postgresql")

    def nats_urls(self, first: Host) -> str:
        """Every server's URL, `first`'s own first: a host reaches the cluster through itself."""
        ordered = [first, *(host for host in self.hosts if host is not first)]
        return ",".join(f"nats://{host.address}:{NATS_PORT}" for host in ordered)

    # -- bring up ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.network.__enter__()
        admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
        try:
            self.database = f"sf_multihost_{uuid.uuid4().hex[:8]}"
            await admin.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await admin.close()
        for host in self.hosts:
            await self.start_nats(host)
        await self._wait_for_jetstream()
        # A leads (it starts first, and upgrades the schema); B is its standby.
        for name, first in (("A", self.hosts[0]), ("B", self.hosts[1])):
            await self.start_scheduler(name, first)
        addrs = ",".join(self.scheduler_addrs.values())
        demo = ServiceProcess(
            env={},
            argv=[sys.executable, "-m", "cli.main", "demo-site", "--port", str(DEMO_PORT)],
            workdir=self.workdir,
            name="demo-site",
            prefix=self.hosts[0].exec_prefix(),
        )
        await demo.start(ready=False)
        self.others.append(demo)
        await self._wait_for_demo_site(self.hosts[0])
        starting = [
            self._start_node(f"n{index + 1}", host, addrs, engine="noop", slots=32)
            for index, host in enumerate(self.hosts)
        ]
        starting.append(self._start_node("c1", self.hosts[0], addrs, engine="chromium", slots=2))
        await asyncio.gather(*starting)
        self.gateway = GatewayService(
            GatewaySettings(
                gateway_listen="127.0.0.1:0", scheduler_addr=addrs, gateway_tokens=TOKEN
            )
        )
        self.gateway_addr = await self.gateway.start()

    async def start_nats(self, host: Host) -> None:
        routes = ",".join(f"nats://{each.address}:{ROUTE_PORT}" for each in self.hosts)
        store = self.workdir / f"nats-{host.name}"
        store.mkdir(parents=True, exist_ok=True)
        argv = [find_nats_server(), "-js", "-sd", str(store), "-n", host.name]
        argv += ["-a", host.address, "-p", str(NATS_PORT), "--cluster_name", "smartfleet"]
        argv += ["--cluster", f"nats://{host.address}:{ROUTE_PORT}", "--routes", routes]
        server = ServiceProcess(
            env={},
            argv=argv,
            workdir=self.workdir,
            name=f"nats-{host.name}",
            prefix=host.exec_prefix(),
        )
        await server.start(ready=False)
        self.nats[host.name] = server

    async def _wait_for_jetstream(self, timeout: float = 60.0) -> None:
        """Until the cluster has a JetStream meta leader (a stream can be placed)."""
        nc = await nats.connect(self.nats_urls(self.hosts[0]).split(","), connect_timeout=2)
        try:
            js = nc.jetstream()
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                try:
                    await js.account_info()
                    return
                except Exception:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.25)
        finally:
            await nc.close()

    async def _wait_for_demo_site(self, host: Host, timeout: float = 30.0) -> None:
        """Until the demo site answers on the host's own loopback (where its node looks)."""
        probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{DEMO_PORT}/', timeout=1)"
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            check = await asyncio.create_subprocess_exec(
                *host.exec_prefix(),
                sys.executable,
                "-c",
                probe,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            if await check.wait() == 0:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the demo site on {host.name} did not answer")
            await asyncio.sleep(0.25)

    async def start_scheduler(self, name: str, first: Host) -> None:
        process = ServiceProcess(
            "services.scheduler",
            env={
                "SMARTFLEET_SCHEDULER_LISTEN": f"{BRIDGE_ADDRESS}:0",
                "SMARTFLEET_DATABASE_URL": self.database_url,
                "SMARTFLEET_DATABASE_UPGRADE": "true",
                "SMARTFLEET_NATS_URL": self.nats_urls(first),
                "SMARTFLEET_NATS_REPLICAS": "3",
                "SMARTFLEET_ACK_WAIT": "10s",
                "SMARTFLEET_LEADER_LEASE": "5s",
                "SMARTFLEET_HEARTBEAT_INTERVAL": "1s",
                "SMARTFLEET_NODE_LOST_AFTER": "6s",
            },
            workdir=self.workdir,
            name=f"scheduler-{name}",
        )
        ready = await process.start()
        self.schedulers[name] = process
        self.scheduler_addrs[name] = ready["scheduler"]

    async def _start_node(
        self, node_id: str, host: Host, scheduler_addrs: str, *, engine: str, slots: int
    ) -> None:
        process = ServiceProcess(
            "services.browser_node",
            env={
                "SMARTFLEET_NODE_ID": node_id,
                "SMARTFLEET_NODE_HOST": host.name,
                "SMARTFLEET_NODE_ENGINE": engine,
                "SMARTFLEET_NODE_SLOTS": str(slots),
                "SMARTFLEET_NODE_LISTEN": "127.0.0.1:0",
                "SMARTFLEET_SCHEDULER_ADDR": scheduler_addrs,
                "SMARTFLEET_NATS_URL": self.nats_urls(host),
                "SMARTFLEET_SHUTDOWN_GRACE": "5s",
                "SMARTFLEET_BROWSER_PATH": "/usr/bin/chromium",
                "SMARTFLEET_ARTIFACT_DIR": str(self.workdir / f"artifacts-{node_id}"),
            },
            workdir=self.workdir,
            name=f"node-{node_id}",
            prefix=host.exec_prefix(),
        )
        await process.start()
        self.nodes[node_id] = process

    # -- looking ------------------------------------------------------------------------------

    async def leader(self, *, timeout: float = 20.0) -> str:
        """The name of the scheduler whose Scheduler service is SERVING (the leader)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for name, address in self.scheduler_addrs.items():
                if self.schedulers[name].running and await serving(address):
                    return name
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("no scheduler leads")
            await asyncio.sleep(0.1)

    def logs(self, names: Sequence[str] = ()) -> str:
        every = [*self.nats.values(), *self.schedulers.values(), *self.nodes.values()]
        return "\n".join(
            f"--- {p.name}\n{p.tail(20)}" for p in every if not names or p.name in names
        )

    # -- tear down ------------------------------------------------------------------------------

    async def close(self) -> None:
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                await self.gateway.stop(grace=0.2)
        processes = [*self.nodes.values(), *self.others, *self.schedulers.values()]
        await asyncio.gather(*(p.kill() for p in processes), return_exceptions=True)
        await asyncio.gather(*(p.kill() for p in self.nats.values()), return_exceptions=True)
        self.network.close()
        if self.database:
            admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await admin.close()


async def serving(address: str, service: str = SCHEDULER_SERVICE) -> bool:
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=0.5
            )
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def seconds(value: timedelta) -> float:
    return round(value.total_seconds(), 2)

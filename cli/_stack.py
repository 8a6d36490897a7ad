"""`Stack`: the whole fleet on one machine — NATS, scheduler, gateway and one browser node.

What `smartctl up` runs, and what end-to-end tests start. Each service is a subprocess
(`python -m services.<name>`) configured through SMARTFLEET_* variables; the stack waits for
each one's ready file, which holds the address it really bound (ports may be 0).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cli._config import read_stack_file, stack_file, write_stack_file
from cli._errors import CliError
from cli._service_process import (
    SERVICE_MODULES,
    ServiceName,
    ServiceProcess,
    StackError,
    tail,
)
from services.common.errors import SmartfleetError
from services.common.nats_server import EmbeddedNatsServer

logger = logging.getLogger(__name__)

__all__ = ["ServiceName", "Stack", "StackError", "StackInfo", "tail"]

_STOP_ORDER: tuple[ServiceName, ...] = ("node", "gateway", "scheduler")  # by kind
# The ports `smartctl up` tries first; a taken one is replaced by a free one.
DEFAULT_GATEWAY_PORT = 50051
DEFAULT_SCHEDULER_PORT = 50052
DEFAULT_NATS_PORT = 4222
# Children of this source tree find `services` even when it is not installed.
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True, kw_only=True)
class StackInfo:
    """Where everything listens; written to <data-dir>/stack.json for the CLI."""

    gateway: str
    token: str
    scheduler: str
    nats_url: str
    database_url: str
    data_dir: str
    node_id: str
    supervisor_pid: int
    node_ids: list[str] = field(default_factory=list)
    artifact_dir: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    started_at: str = ""


def stack_database_url(data_dir: Path) -> str:
    """The SQLite database of the local stack kept in `data_dir`."""
    return f"sqlite+aiosqlite:///{data_dir.expanduser().resolve() / 'smartfleet.db'}"


class Stack:
    """Starts and stops the local fleet; `async with Stack(data_dir=…) as stack:` in tests."""

    def __init__(
        self,
        *,
        data_dir: Path,
        gateway_port: int = DEFAULT_GATEWAY_PORT,
        scheduler_port: int = DEFAULT_SCHEDULER_PORT,
        nats_port: int = 0,
        free_ports: Collection[str] = (),
        nodes: int = 1,
        database_url: str | None = None,
        allowed_hosts: str | None = None,
        node_slots: int = 0,
        node_engine: Literal["chromium", "noop"] = "chromium",
        node_id: str | None = None,
        token: str | None = None,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        start_timeout: timedelta = timedelta(seconds=60),
        stop_timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.token = token or secrets.token_urlsafe(32)
        self.node_id = node_id or f"{socket.gethostname()}-local"
        self.database_url = database_url or stack_database_url(self.data_dir)
        # The scheduler's artifact store: in the data dir whatever the database (a PostgreSQL
        # scheduler would otherwise default to a folder in /tmp shared by every stack).
        self.artifact_dir = os.environ.get("SMARTFLEET_ARTIFACT_DIR") or str(
            self.data_dir / "artifacts"
        )
        self._allowed_hosts = allowed_hosts
        self._host = host
        self._ports = {"gateway": gateway_port, "scheduler": scheduler_port, "nats": nats_port}
        # The ports ("gateway", "scheduler", "nats") that give way to a free one when taken
        # (noted in `port_notes`); any other taken port is an error.
        self._free_ports = frozenset(free_ports)
        self.port_notes: list[str] = []
        if nodes < 1:
            raise StackError(f"a stack needs at least one node, got {nodes}")
        self._node_slots = node_slots
        # `noop` only for benchmarks: the node then completes jobs without a browser.
        self._node_engine = node_engine
        self._extra_env = dict(env or {})
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._nats: EmbeddedNatsServer | None = None
        self.nats_url = ""
        self._services: dict[str, ServiceProcess] = {
            name: ServiceProcess(name=name, data_dir=self.data_dir) for name in SERVICE_MODULES
        }
        # Further local nodes are `node-2`, `node-3`, …, each its own process and node id.
        for number in range(2, nodes + 1):
            self._services[f"node-{number}"] = ServiceProcess(
                name="node", data_dir=self.data_dir, instance=f"node-{number}"
            )
        self._started_at = ""
        self._wrote_stack_file = False

    # -- addresses ---------------------------------------------------------------------------

    @property
    def gateway_addr(self) -> str:
        return self._services["gateway"].address

    @property
    def scheduler_addr(self) -> str:
        return self._services["scheduler"].address

    @property
    def node_pid(self) -> int | None:
        return self._services["node"].pid if self._services["node"].running else None

    @property
    def node_keys(self) -> list[str]:
        return [key for key, service in self._services.items() if service.name == "node"]

    def node_id_of(self, key: str) -> str:
        return self.node_id if key == "node" else f"{self.node_id}-{key.removeprefix('node-')}"

    def log_path(self, name: str) -> Path:
        return self._services[name].log_path

    @property
    def info(self) -> StackInfo:
        pids: dict[str, int | None] = {
            name: service.pid for name, service in self._services.items() if service.running
        }
        if self._nats is not None and self._nats.pid:
            pids["nats"] = self._nats.pid
        return StackInfo(
            gateway=self.gateway_addr,
            token=self.token,
            scheduler=self.scheduler_addr,
            nats_url=self.nats_url,
            database_url=self.database_url,
            data_dir=str(self.data_dir),
            node_id=self.node_id,
            node_ids=[self.node_id_of(key) for key in self.node_keys],
            artifact_dir=self.artifact_dir,
            supervisor_pid=os.getpid(),
            pids={name: pid for name, pid in pids.items() if pid is not None},
            started_at=self._started_at,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> StackInfo:
        """NATS, then the scheduler, then gateway and node; stops what started if one fails."""
        self._refuse_if_running()
        for name, port in self._ports.items():
            if _port_free(self._host, port):
                continue
            if name not in self._free_ports:
                raise StackError(
                    f"{self._host}:{port} is in use: another `smartctl up`? "
                    f"pass --{name}-port with another port, or 0 for any free one"
                )
            self._ports[name] = 0
            self.port_notes.append(f"{name}: {self._host}:{port} is in use; a free port instead")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            nats_dir = self.data_dir / "nats"
            nats_dir.mkdir(exist_ok=True)
            self._nats = EmbeddedNatsServer(nats_dir, host=self._host, port=self._ports["nats"])
            try:
                self.nats_url = await self._nats.start(timeout=self._start_timeout.total_seconds())
            except SmartfleetError as error:
                raise StackError(f"NATS did not start: {error.message}") from error
            await self._start_service("scheduler")
            await self._start_together("gateway", *self.node_keys)
            self._write_stack_file()
        except BaseException:
            await self.stop()
            raise
        return self.info

    async def stop(self) -> None:
        """Stop node, gateway, scheduler (SIGTERM, then SIGKILL after the timeout), then NATS."""
        for kind in _STOP_ORDER:
            stopping = [
                (key, service) for key, service in self._services.items() if service.name == kind
            ]
            results = await asyncio.gather(
                *(service.stop(timeout=self._stop_timeout) for _, service in stopping),
                return_exceptions=True,
            )
            for (key, _), result in zip(stopping, results, strict=True):
                if isinstance(result, BaseException):  # keep stopping the others
                    logger.error("stopping %s failed: %r", key, result)
        nats, self._nats = self._nats, None
        if nats is not None:
            await nats.stop()
        if self._wrote_stack_file:
            stack_file(self.data_dir).unlink(missing_ok=True)
            self._wrote_stack_file = False

    async def restart(self, name: str) -> None:
        """Start a service that exited again, on the address it had (clients keep working)."""
        await self._services[name].stop(timeout=self._stop_timeout)
        await self._start_service(name)
        self._write_stack_file()

    async def kill_node(self, signum: int = signal.SIGKILL) -> int | None:
        """Signal the browser node (SIGKILL: with its browsers, like a lost host) and wait."""
        node = self._services["node"]
        await node.signal(signum)
        code = await node.wait(self._stop_timeout)
        if code is None:
            await node.signal(signal.SIGKILL)
            code = await node.wait(timedelta(seconds=10))
        return code

    async def start_node(self) -> None:
        """Start the browser node again (same node id) after `kill_node`."""
        await self.restart("node")

    async def wait_for_exit(self) -> str:
        """Block until one of the services exits; returns its name (for a supervisor)."""
        waits = {
            asyncio.ensure_future(service.process.wait()): name
            for name, service in self._services.items()
            if service.process is not None and service.process.returncode is None
        }
        if not waits:
            raise StackError("no service is running")
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return waits[next(iter(done))]

    def exit_code(self, name: str) -> int | None:
        process = self._services[name].process
        return process.returncode if process else None

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- internals ---------------------------------------------------------------------------

    async def _start_together(self, *names: str) -> None:
        tasks = [asyncio.ensure_future(self._start_service(name)) for name in names]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one failed: the others' waits end too (stop() reaps them)
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _start_service(self, name: str) -> None:
        await self._services[name].start(self._env_for(name), timeout=self._start_timeout)
        logger.info("%s ready on %s", name, self._services[name].address)

    def _env_for(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if (_PROJECT_ROOT / "services").is_dir():
            env["PYTHONPATH"] = os.pathsep.join(
                part for part in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if part
            )
        env["SMARTFLEET_NATS_URL"] = self.nats_url
        kind = self._services[name].name
        if kind == "scheduler":
            env["SMARTFLEET_SCHEDULER_LISTEN"] = self._listen_address("scheduler")
            env["SMARTFLEET_DATABASE_URL"] = self.database_url
            # The local stack needs no `smartctl db upgrade`: its scheduler migrates at start.
            env["SMARTFLEET_DATABASE_UPGRADE"] = "true"
            env["SMARTFLEET_ARTIFACT_DIR"] = self.artifact_dir
            if self._allowed_hosts is not None:
                env["SMARTFLEET_ALLOWED_HOSTS"] = self._allowed_hosts
        elif kind == "gateway":
            env["SMARTFLEET_GATEWAY_LISTEN"] = self._listen_address("gateway")
            env["SMARTFLEET_SCHEDULER_ADDR"] = self.scheduler_addr
            env["SMARTFLEET_GATEWAY_TOKENS"] = self.token
        else:
            env["SMARTFLEET_SCHEDULER_ADDR"] = self.scheduler_addr
            env["SMARTFLEET_NODE_ID"] = self.node_id_of(name)
            env["SMARTFLEET_NODE_SLOTS"] = str(self._node_slots)
            env["SMARTFLEET_NODE_ENGINE"] = self._node_engine
            env["SMARTFLEET_NODE_LISTEN"] = f"{self._host}:0"
            # Where the node stages artifacts before uploading them to the scheduler's store.
            env["SMARTFLEET_ARTIFACT_DIR"] = str(
                self.data_dir / ("node-artifacts" if name == "node" else f"{name}-artifacts")
            )
        env.update(self._extra_env)
        return env

    def _listen_address(self, name: Literal["scheduler", "gateway"]) -> str:
        # After a first start the real port is known: a restart binds the same one.
        return self._services[name].address or f"{self._host}:{self._ports[name]}"

    def _refuse_if_running(self) -> None:
        try:
            existing = read_stack_file(self.data_dir)
        except CliError:
            existing = None
        if not existing:
            return
        pid = existing.get("supervisor_pid")
        if isinstance(pid, int) and _alive(pid):
            raise StackError(
                f"a stack is already running from {self.data_dir} (supervisor pid {pid}); "
                "stop it (Ctrl-C in its terminal) or use another --data-dir"
            )
        children = existing.get("pids")
        leftovers = sorted(
            f"{name} {child}"
            for name, child in (children.items() if isinstance(children, dict) else ())
            if isinstance(child, int) and _alive(child)
        )
        if leftovers:
            raise StackError(
                f"services of an earlier stack in {self.data_dir} are still running "
                f"({', '.join(leftovers)}) though its supervisor is gone; stop them "
                f"(kill <pid>) and remove {stack_file(self.data_dir)}"
            )

    def _write_stack_file(self) -> None:
        write_stack_file(self.data_dir, asdict(self.info))
        self._wrote_stack_file = True


def _port_free(host: str, port: int) -> bool:
    """Whether a fixed port can be bound now (0, any free port, always can)."""
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

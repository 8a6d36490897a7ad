"""One service of a local stack as a subprocess: its log, its ready file, start/stop/kill."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cli._errors import CliError

logger = logging.getLogger(__name__)

ServiceName = Literal["scheduler", "gateway", "node"]
SERVICE_MODULES: dict[ServiceName, str] = {
    "scheduler": "services.scheduler",
    "gateway": "services.gateway",
    "node": "services.browser_node",
}


class StackError(CliError):
    """The stack could not start (or a service in it failed); the message says where to look."""


class ServiceProcess:
    """One service subprocess: its log file, its ready file, start/stop/kill."""

    def __init__(self, *, name: ServiceName, data_dir: Path, instance: str = "") -> None:
        # `name` is the kind of service; `instance` tells several of one kind apart (node-2).
        self.name = name
        self.instance = instance or name
        self.log_path = data_dir / "logs" / f"{self.instance}.log"
        self.ready_path = data_dir / "run" / f"{self.instance}.ready.json"
        self.process: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def address(self) -> str:
        return str(self.ready.get(self.name, ""))

    async def start(self, env: Mapping[str, str], *, timeout: timedelta) -> dict[str, Any]:
        """Spawn the service and wait for its ready file; fail with the log tail otherwise."""
        self.ready_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.ready_path.unlink(missing_ok=True)
        self.ready = {}
        child_env = {**env, "SMARTFLEET_READY_FILE": str(self.ready_path)}
        with open(self.log_path, "ab") as log:
            log.write(
                f"--- {datetime.now(UTC).isoformat(timespec='seconds')} starting {self.instance}\n".encode()
            )
            log.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                SERVICE_MODULES[self.name],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=child_env,
                # Its own session: a terminal's Ctrl-C reaches only the supervisor, which then
                # stops the services in order (node drains while the scheduler still listens).
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout.total_seconds()
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise StackError(
                    f"{self.name} exited with code {self.process.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            content = _read_json(self.ready_path)
            if (
                content is not None
                and content.get("pid") == self.process.pid
                and content.get(self.name)
            ):
                self.ready = content
                return content
            await asyncio.sleep(0.05)
        await self.stop(timeout=timedelta(seconds=5))
        raise StackError(
            f"{self.name} was not ready within {timeout.total_seconds():.0f}s; "
            f"last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    async def signal(self, signum: int) -> None:
        if self.running and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                if signum == signal.SIGKILL:
                    # The whole process group, like a host dying: browsers and drivers too.
                    os.killpg(self.process.pid, signal.SIGKILL)
                else:
                    self.process.send_signal(signum)

    async def wait(self, timeout: timedelta) -> int | None:
        if self.process is None:
            return None
        try:
            return await asyncio.wait_for(self.process.wait(), timeout.total_seconds())
        except TimeoutError:
            return None

    async def stop(self, *, timeout: timedelta) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; also reap what it left in its group."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            await self.signal(signal.SIGTERM)
            if await self.wait(timeout) is None:
                logger.warning(
                    "%s did not stop within %ss; killing it", self.name, timeout.total_seconds()
                )
                await self.signal(signal.SIGKILL)
                await process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # leftovers (a browser whose parent is gone)
        self.ready_path.unlink(missing_ok=True)
        return process.returncode


def tail(path: Path, *, lines: int = 20, max_bytes: int = 16_384) -> str:
    """The last lines of a log file, indented, for error messages."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "  (no log)"
    last = text.splitlines()[-lines:]
    return "\n".join(f"  {line}" for line in last) or "  (empty log)"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None

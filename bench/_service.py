"""Smartfleet services in processes of their own, for tests and benchmarks that kill them (-9,
SIGTERM) or place them in network namespaces.

`ServiceProcess("services.scheduler", env={...}, workdir=...)` runs `python -m services.scheduler`
with the given SMARTFLEET_* settings (optionally under a prefix such as `ip netns exec h1`),
waits for its ready file and reads the addresses it bound from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class ServiceProcess:
    def __init__(
        self,
        module: str = "",
        *,
        env: Mapping[str, str],
        workdir: Path,
        name: str,
        prefix: Sequence[str] = (),
        argv: Sequence[str] = (),
    ) -> None:
        """`module` runs as `python -m module`; or `argv` as it is (no ready file then)."""
        self.module = module
        self._argv = list(argv) if argv else [sys.executable, "-m", module]
        self.name = name
        self._env = dict(env)
        self._prefix = list(prefix)
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready_file = workdir / f"{name}.ready.json"
        self.log = workdir / f"{name}.log"
        self._process: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}

    @property
    def pid(self) -> int | None:
        """The service's own pid (from its ready file: a prefix such as `ip netns exec` execs)."""
        return int(self.ready["pid"]) if "pid" in self.ready else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, *, timeout: float = 60.0, ready: bool = True) -> dict[str, Any]:
        """Start it; with `ready`, wait for its ready file and return what it says."""
        self.ready_file.unlink(missing_ok=True)
        env = {
            **{
                key: value for key, value in os.environ.items() if not key.startswith("SMARTFLEET_")
            },
            "PYTHONPATH": str(REPO),
            "SMARTFLEET_READY_FILE": str(self.ready_file),
            "SMARTFLEET_LOG_JSON": "false",
            **self._env,
        }
        with open(self.log, "ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self._prefix,
                *self._argv,
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if not ready:
            return {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self._process.returncode is not None:
                raise RuntimeError(f"{self.name} exited {self._process.returncode}: {self.tail()}")
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.ready = json.loads(self.ready_file.read_text())
                return self.ready
            await asyncio.sleep(0.05)
        await self.kill()
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f}s: {self.tail()}")

    def send(self, signum: int) -> None:
        pid = self.pid or (self._process.pid if self._process else None)
        if pid is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    async def wait(self, *, timeout: float) -> int | None:
        if self._process is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._process.wait(), timeout)
        return None

    async def kill(self) -> None:
        """SIGKILL, no questions asked (and reap it)."""
        self.send(signal.SIGKILL)
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()

    async def stop(self, *, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not ended within `timeout`."""
        if not self.running:
            return
        self.send(signal.SIGTERM)
        if await self.wait(timeout=timeout) is None:
            await self.kill()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

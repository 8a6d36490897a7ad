"""Sessions/s through the whole system against plain Playwright loops in this process, and the
memory each session costs in both.

Memory is the PSS of a process tree (shared pages split among the processes that map them; RSS
counts Chromium's shared code once per process, so its sum over-counts), sampled every 250 ms;
RSS is kept alongside for comparison.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass

from playwright.async_api import Browser, Playwright

from bench._fleet import Fleet, spec
from bench._procs import tree_memory_mb
from services.browser_node._browser import LAUNCH_ARGS, find_browser
from smartfleet.v1 import runs_pb2


@dataclass(frozen=True, slots=True)
class LoopResult:
    sessions: int
    seconds: float
    # Medians over the loop of the measured tree (node or driver, and browsers), in MB.
    pss_mb: float = 0.0
    rss_mb: float = 0.0
    pss_peak_mb: float = 0.0
    pss_read: bool = True  # False: some process's PSS was unreadable and counted with its RSS

    @property
    def per_s(self) -> float:
        return self.sessions / self.seconds


class MemorySampler:
    """PSS and RSS of a process tree (less excluded subtrees) every `interval` while it runs."""

    def __init__(
        self,
        root: int,
        *,
        include_root: bool = True,
        exclude_trees: Iterable[int] = (),
        interval: float = 0.25,
    ) -> None:
        self._root = root
        self._include_root = include_root
        self._exclude = tuple(exclude_trees)
        self._interval = interval
        self.pss: list[float] = []
        self.rss: list[float] = []
        self.pss_read = True
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            pss, rss, every = await asyncio.to_thread(
                tree_memory_mb,
                self._root,
                include_root=self._include_root,
                exclude_trees=self._exclude,
            )
            self.pss.append(pss)
            self.rss.append(rss)
            self.pss_read &= every
            await asyncio.sleep(self._interval)

    async def __aenter__(self) -> MemorySampler:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def result(self, sessions: int, seconds: float) -> LoopResult:
        return LoopResult(
            sessions,
            seconds,
            pss_mb=statistics.median(self.pss) if self.pss else 0.0,
            rss_mb=statistics.median(self.rss) if self.rss else 0.0,
            pss_peak_mb=max(self.pss, default=0.0),
            pss_read=self.pss_read,
        )


async def launch(playwright: Playwright) -> Browser:
    """Launch Chromium the way a browser node does (same executable choice, same switches)."""
    exe = find_browser(
        os.environ.get("SMARTFLEET_BROWSER_PATH"),
        playwright_executable=playwright.chromium.executable_path,
    )
    return await playwright.chromium.launch(
        executable_path=exe.path, headless=True, args=list(LAUNCH_ARGS)
    )


async def _bounded(n: int, concurrency: int, session) -> float:  # type: ignore[no-untyped-def]
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            await session()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began


async def warm_loop(playwright: Playwright, url: str, *, n: int, concurrency: int) -> LoopResult:
    """One warm browser; a fresh context and page per session, goto wait_until=load."""
    browser = await launch(playwright)
    try:

        async def session() -> None:
            context = await browser.new_context()
            try:
                page = await context.new_page()
                response = await page.goto(url, wait_until="load", timeout=30_000)
                assert response is not None and response.ok
            finally:
                await context.close()

        await session()  # warm-up, like the warm-up run of the system
        seconds = await _bounded(n, concurrency, session)
    finally:
        await browser.close()
    return LoopResult(n, seconds)


async def cold_loop(
    playwright: Playwright, url: str, *, n: int, concurrency: int, exclude_trees: Iterable[int]
) -> LoopResult:
    """A browser launched (and closed) per session; memory of this process's children
    meanwhile (the Playwright driver and its browsers) less `exclude_trees` (the stack's
    services, also children of this process)."""

    async def session() -> None:
        browser = await launch(playwright)
        try:
            page = await browser.new_page()
            response = await page.goto(url, wait_until="load", timeout=30_000)
            assert response is not None and response.ok
        finally:
            await browser.close()

    async with MemorySampler(
        os.getpid(), include_root=False, exclude_trees=exclude_trees
    ) as sampler:
        seconds = await _bounded(n, concurrency, session)
    return sampler.result(n, seconds)


async def fleet_run(
    fleet: Fleet, url: str, *, n: int, concurrency: int, node_pid: int
) -> tuple[LoopResult, runs_pb2.Run]:
    """A fast-paced run of n sessions; seconds from CreateRun to the completed update, and the
    memory of the node's tree (node, its Playwright driver, its browsers) meanwhile."""
    async with MemorySampler(node_pid) as sampler:
        final, seconds = await fleet.run_to_end(
            spec("bench-throughput", [url], n, concurrency=concurrency)
        )
    return sampler.result(n, seconds), final

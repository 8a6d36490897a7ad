"""Sessions/s through the whole system against plain Playwright loops in this process, and the
memory each session costs in both."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from playwright.async_api import Browser, Playwright

from bench._fleet import Fleet, spec
from bench._procs import RssSampler
from services.browser_node._browser import LAUNCH_ARGS, find_browser
from smartfleet.v1 import runs_pb2


@dataclass(frozen=True, slots=True)
class LoopResult:
    sessions: int
    seconds: float
    rss_mb: float = 0.0  # median RSS of the browsers (and driver) while the loop ran

    @property
    def per_s(self) -> float:
        return self.sessions / self.seconds


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


async def cold_loop(playwright: Playwright, url: str, *, n: int, concurrency: int) -> LoopResult:
    """A browser launched (and closed) per session; RSS of this process's children meanwhile."""

    async def session() -> None:
        browser = await launch(playwright)
        try:
            page = await browser.new_page()
            response = await page.goto(url, wait_until="load", timeout=30_000)
            assert response is not None and response.ok
        finally:
            await browser.close()

    async with RssSampler(os.getpid(), include_root=False) as sampler:
        seconds = await _bounded(n, concurrency, session)
    return LoopResult(n, seconds, sampler.median)


async def fleet_run(
    fleet: Fleet, url: str, *, n: int, concurrency: int, node_pid: int
) -> tuple[LoopResult, runs_pb2.Run]:
    """A fast-paced run of n sessions; seconds from CreateRun to the completed update."""
    async with RssSampler(node_pid) as sampler:
        final, seconds = await fleet.run_to_end(
            spec("bench-throughput", [url], n, concurrency=concurrency)
        )
    return LoopResult(n, seconds, sampler.median), final

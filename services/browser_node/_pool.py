"""A warm Chromium behind one Playwright driver; each session gets a fresh context and page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from playwright._repo_version import version as PLAYWRIGHT_VERSION
from playwright.async_api import Browser, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from services import __version__
from services.browser_node._browser import LAUNCH_ARGS, BrowserExecutable, find_browser
from services.common.errors import Unavailable

logger = logging.getLogger(__name__)

RUN_HEADER = "X-Smartfleet-Run"
PRODUCT_TOKEN = f"Smartfleet/{__version__}"


@dataclass(slots=True, eq=False)
class _LiveBrowser:
    """One launched browser and how many sessions use it (it closes when retired and idle)."""

    browser: Browser
    generation: int
    active: int = 0
    served: int = 0
    retiring: bool = False


class BrowserPool:
    """Keeps one Chromium launched, relaunches it after a crash and recycles it after N sessions.

    `async with pool.session(run_id=...) as page` yields a page in a new context that is closed
    afterwards; traffic is marked (User-Agent token and `X-Smartfleet-Run`) unless turned off.
    """

    def __init__(
        self,
        *,
        browser_path: str | None = None,
        headless: bool = True,
        mark_traffic: bool = True,
        recycle_after: int = 500,
        launch_timeout: timedelta = timedelta(seconds=30),
        operation_timeout: timedelta = timedelta(seconds=15),
    ) -> None:
        self._browser_path = browser_path
        self._headless = headless
        self._mark_traffic = mark_traffic
        self._recycle_after = recycle_after
        self._launch_timeout = launch_timeout
        self._operation_timeout = operation_timeout
        self._playwright: Playwright | None = None
        self._executable: BrowserExecutable | None = None
        self._current: _LiveBrowser | None = None
        self._retired: set[_LiveBrowser] = set()
        self._lock = asyncio.Lock()
        self._generation = 0
        self.browser_version = ""
        self.default_user_agent = ""
        self.playwright_version = PLAYWRIGHT_VERSION

    @property
    def user_agent(self) -> str:
        """The User-Agent sessions send: the browser's own, plus the product token when marking."""
        if self._mark_traffic and self.default_user_agent:
            return f"{self.default_user_agent} {PRODUCT_TOKEN}"
        return self.default_user_agent

    @property
    def started(self) -> bool:
        return self._playwright is not None and self._current is not None

    async def start(self) -> None:
        """Start the driver and launch the browser; raises BrowserNotFound or Unavailable."""
        if self.started:
            return
        try:
            if self._playwright is None:
                self._playwright = await asyncio.wait_for(
                    async_playwright().start(), self._launch_timeout.total_seconds()
                )
            self._executable = find_browser(
                self._browser_path, playwright_executable=self._playwright.chromium.executable_path
            )
            async with self._lock:
                live = await self._launch()
                self._current = live
            await self._read_identity(live.browser)
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "browser ready: Chromium %s from %s, Playwright %s",
            self.browser_version,
            self._executable.describe(),
            self.playwright_version,
        )

    async def stop(self) -> None:
        """Close every browser and the driver; safe to call more than once."""
        browsers = [live for live in (self._current, *self._retired) if live is not None]
        self._current = None
        self._retired.clear()
        for live in browsers:
            live.retiring = True
            await self._close(live)
        playwright, self._playwright = self._playwright, None
        if playwright is not None:
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(playwright.stop(), self._operation_timeout.total_seconds())

    async def __aenter__(self) -> BrowserPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.asynccontextmanager
    async def session(self, *, run_id: str) -> AsyncIterator[Page]:
        """A fresh context and page for one session, closed when the block ends."""
        live = await self._acquire()
        context = None
        try:
            headers = {RUN_HEADER: run_id} if self._mark_traffic and run_id else {}
            context = await asyncio.wait_for(
                live.browser.new_context(
                    user_agent=self.user_agent or None, extra_http_headers=headers
                ),
                self._operation_timeout.total_seconds(),
            )
            page = await asyncio.wait_for(
                context.new_page(), self._operation_timeout.total_seconds()
            )
            yield page
        finally:
            if context is not None:
                # A crashed browser can't close its contexts; that's fine, they're gone with it.
                with contextlib.suppress(PlaywrightError, TimeoutError):
                    await asyncio.wait_for(context.close(), self._operation_timeout.total_seconds())
            await self._release(live)

    async def _acquire(self) -> _LiveBrowser:
        async with self._lock:
            if self._playwright is None:
                raise Unavailable("browser pool is not started")
            live = self._current
            if live is not None and not live.browser.is_connected():
                logger.warning("browser (generation %d) disconnected; relaunching", live.generation)
                await self._retire(live)
                live = None
            elif live is not None and self._recycle_after and live.served >= self._recycle_after:
                logger.info("recycling browser after %d sessions", live.served)
                await self._retire(live)
                live = None
            if live is None:
                self._current = None
                live = await self._launch()
                self._current = live
            live.active += 1
            live.served += 1
            return live

    async def _release(self, live: _LiveBrowser) -> None:
        live.active -= 1
        if live.retiring and live.active == 0:
            self._retired.discard(live)
            await self._close(live)

    async def _retire(self, live: _LiveBrowser) -> None:
        """Stop handing out `live`; it closes now if idle, else when its last session ends."""
        live.retiring = True
        if live.active == 0:
            await self._close(live)
        else:
            self._retired.add(live)

    async def _launch(self) -> _LiveBrowser:
        assert self._playwright is not None and self._executable is not None
        self._generation += 1
        try:
            browser = await self._playwright.chromium.launch(
                executable_path=self._executable.path,
                headless=self._headless,
                args=list(LAUNCH_ARGS),
                timeout=self._launch_timeout.total_seconds() * 1000,
            )
        except PlaywrightError as error:
            raise Unavailable(
                f"cannot launch {self._executable.describe()}: {error.message.splitlines()[0]}"
            ) from error
        live = _LiveBrowser(browser=browser, generation=self._generation)
        browser.on("disconnected", lambda _: self._on_disconnected(live))
        logger.debug("launched browser generation %d", live.generation)
        return live

    def _on_disconnected(self, live: _LiveBrowser) -> None:
        if not live.retiring:
            logger.warning("browser (generation %d) disconnected", live.generation)

    async def _read_identity(self, browser: Browser) -> None:
        self.browser_version = browser.version
        context = await asyncio.wait_for(
            browser.new_context(), self._operation_timeout.total_seconds()
        )
        try:
            page = await asyncio.wait_for(
                context.new_page(), self._operation_timeout.total_seconds()
            )
            self.default_user_agent = await asyncio.wait_for(
                page.evaluate("navigator.userAgent"), self._operation_timeout.total_seconds()
            )
        finally:
            with contextlib.suppress(PlaywrightError, TimeoutError):
                await asyncio.wait_for(context.close(), self._operation_timeout.total_seconds())

    async def _close(self, live: _LiveBrowser) -> None:
        with contextlib.suppress(PlaywrightError, TimeoutError):
            await asyncio.wait_for(live.browser.close(), self._operation_timeout.total_seconds())

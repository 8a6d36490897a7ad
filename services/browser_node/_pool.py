"""Warm Chromium behind one Playwright driver; each session gets a fresh context and page.

Account-less sessions share one browser. A session of an account runs in that account's own
browser (launched with the account's proxy), never shared with another account or with
account-less sessions; idle account browsers close after a while, and at most
`max_account_browsers` stay open (the least recently used goes first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from playwright._repo_version import version as PLAYWRIGHT_VERSION
from playwright.async_api import Browser, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from services import __version__
from services.browser_node._accounts import AccountState, AccountStates, proxy_settings
from services.browser_node._browser import LAUNCH_ARGS, BrowserExecutable, find_browser
from services.browser_node._emulation import context_options
from services.common.errors import Unavailable
from services.common.types import Cell

logger = logging.getLogger(__name__)

RUN_HEADER = "X-Smartfleet-Run"
PRODUCT_TOKEN = f"Smartfleet/{__version__}"
_SHARED = ""  # the lock key of the account-less browser


@dataclass(slots=True, eq=False)
class _LiveBrowser:
    """One launched browser and how many sessions use it (it closes when retired and idle)."""

    browser: Browser
    generation: int
    account: str = ""
    proxy: str = ""
    active: int = 0
    served: int = 0
    retiring: bool = False
    last_used: float = 0.0


class BrowserPool:
    """Keeps Chromium launched, relaunches it after a crash and recycles it after N sessions.

    `async with pool.session(run_id=..., cell=..., account=...) as page` yields a page in a new
    context that is closed afterwards; traffic is marked (User-Agent token and
    `X-Smartfleet-Run`) unless turned off.
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
        accounts: AccountStates | None = None,
        max_account_browsers: int = 8,
        account_idle: timedelta = timedelta(minutes=5),
        proxy: str = "",
    ) -> None:
        self._browser_path = browser_path
        # The node's egress proxy, for the shared browser; account browsers use their account's.
        self._proxy = proxy
        self._headless = headless
        self._mark_traffic = mark_traffic
        self._recycle_after = recycle_after
        self._launch_timeout = launch_timeout
        self._operation_timeout = operation_timeout
        self.accounts = accounts
        self._max_account_browsers = max(1, max_account_browsers)
        self._account_idle = account_idle
        self._playwright: Playwright | None = None
        self._executable: BrowserExecutable | None = None
        self._current: _LiveBrowser | None = None
        # Account browsers, least recently used first.
        self._accounts: OrderedDict[str, _LiveBrowser] = OrderedDict()
        self._retired: set[_LiveBrowser] = set()
        # One lock per browser (account, or _SHARED): launching one never holds up the others.
        self._locks: dict[str, asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None
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

    def browser_for(self, account: str = "") -> Browser | None:
        """The browser that sessions of `account` (or account-less ones) use now, if launched."""
        live = self._accounts.get(account) if account else self._current
        return live.browser if live is not None else None

    @property
    def account_browsers(self) -> int:
        return len(self._accounts)

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
            async with self._lock(_SHARED):
                live = await self._launch(proxy=self._proxy)
                self._current = live
            await self._read_identity(live.browser)
        except BaseException:
            await self.stop()
            raise
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep(), name="account-browser-sweeper"
            )
        logger.info(
            "browser ready: Chromium %s from %s, Playwright %s",
            self.browser_version,
            self._executable.describe(),
            self.playwright_version,
        )

    async def stop(self) -> None:
        """Close every browser and the driver; safe to call more than once."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        browsers = [self._current, *self._accounts.values(), *self._retired]
        self._current = None
        self._accounts.clear()
        self._retired.clear()
        for live in browsers:
            if live is not None:
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
    async def session(
        self,
        *,
        run_id: str,
        cell: Cell | None = None,
        account: str = "",
        har_path: Path | None = None,
    ) -> AsyncIterator[Page]:
        """A fresh context and page for one session, closed when the block ends.

        Raises UnknownDevice for a device this Playwright lacks, AccountRefused or
        AccountStateUnavailable when the account's state cannot be had, Unavailable when no
        browser can be launched.
        """
        if self._playwright is None:
            raise Unavailable("browser pool is not started")
        options = context_options(
            cell or Cell(),
            devices=self._playwright.devices,
            default_user_agent=self.default_user_agent,
            product_token=PRODUCT_TOKEN if self._mark_traffic else "",
            playwright_version=self.playwright_version,
        )
        if self._mark_traffic and run_id:
            options["extra_http_headers"] = {RUN_HEADER: run_id}
        if har_path is not None:
            # Written when the context closes; bodies are left out to keep it small.
            options["record_har_path"] = str(har_path)
            options["record_har_content"] = "omit"
        live, state = await self._acquire(account)
        if state is not None and state.storage_state is not None:
            options["storage_state"] = state.storage_state
        context = None
        try:
            context = await asyncio.wait_for(
                live.browser.new_context(**options), self._operation_timeout.total_seconds()
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

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _acquire(self, account: str) -> tuple[_LiveBrowser, AccountState | None]:
        async with self._lock(account or _SHARED):
            if self._playwright is None:
                raise Unavailable("browser pool is not started")
            live = self._accounts.get(account) if account else self._current
            if live is not None and self._worn_out(live):
                await self._retire(live)
                live = None
            state = None
            if account:
                if self.accounts is None:
                    raise Unavailable("this node has no link to fetch account state from")
                # A new browser starts from the scheduler's latest state; a running one may use
                # the briefly cached one.
                state = await self.accounts.get(account, fresh=live is None)
                if live is not None and state.proxy != live.proxy:
                    logger.info(
                        "%s: the account's proxy changed; relaunching", self._describe(live)
                    )
                    await self._retire(live)
                    live = None
            if live is None:
                proxy = state.proxy if state is not None else self._proxy
                live = await self._launch(account=account, proxy=proxy)
                if account:
                    previous = self._accounts.get(account)
                    if previous is not None:  # only if its lock was pruned mid-handoff; be safe
                        await self._retire(previous)
                    self._accounts[account] = live
                    await self._evict_beyond_cap()
                else:
                    self._current = live
            if account:
                self._accounts.move_to_end(account)
            live.active += 1
            live.served += 1
            live.last_used = asyncio.get_running_loop().time()
            return live, state

    def _worn_out(self, live: _LiveBrowser) -> bool:
        if not live.browser.is_connected():
            logger.warning("%s disconnected; relaunching", self._describe(live))
            return True
        if self._recycle_after and live.served >= self._recycle_after:
            logger.info("recycling %s after %d sessions", self._describe(live), live.served)
            return True
        return False

    async def _evict_beyond_cap(self) -> None:
        while len(self._accounts) > self._max_account_browsers:
            account, live = next(iter(self._accounts.items()))
            logger.info(
                "closing the browser of account %r: more than %d account browsers are open",
                account,
                self._max_account_browsers,
            )
            await self._retire(live)

    async def _release(self, live: _LiveBrowser) -> None:
        live.active -= 1
        live.last_used = asyncio.get_running_loop().time()
        if live.retiring and live.active == 0:
            self._retired.discard(live)
            await self._close(live)

    async def _retire(self, live: _LiveBrowser) -> None:
        """Stop handing out `live`; it closes now if idle, else when its last session ends."""
        if self._current is live:
            self._current = None
        if live.account and self._accounts.get(live.account) is live:
            del self._accounts[live.account]
        live.retiring = True
        if live.active == 0:
            await self._close(live)
        else:
            self._retired.add(live)

    async def close_idle(self) -> int:
        """Close account browsers unused for `account_idle`; returns how many were closed."""
        now = asyncio.get_running_loop().time()
        idle = [
            live
            for account, live in self._accounts.items()
            if live.active == 0
            and now - live.last_used >= self._account_idle.total_seconds()
            and not self._lock(account).locked()
        ]
        for live in idle:
            logger.info("closing the idle browser of account %r", live.account)
            await self._retire(live)
        # Forget the locks of accounts without a browser (they are created again when needed).
        if len(self._locks) > 4 * self._max_account_browsers:
            for key, lock in list(self._locks.items()):
                if key != _SHARED and key not in self._accounts and not lock.locked():
                    del self._locks[key]
        return len(idle)

    async def _sweep(self) -> None:
        interval = min(max(self._account_idle.total_seconds() / 2, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.close_idle()
            except Exception:
                logger.exception("closing idle account browsers failed")

    async def _launch(self, *, account: str = "", proxy: str = "") -> _LiveBrowser:
        assert self._playwright is not None and self._executable is not None
        self._generation += 1
        try:
            browser = await self._playwright.chromium.launch(
                executable_path=self._executable.path,
                headless=self._headless,
                args=list(LAUNCH_ARGS),
                proxy=proxy_settings(proxy),
                timeout=self._launch_timeout.total_seconds() * 1000,
            )
        except PlaywrightError as error:
            raise Unavailable(
                f"cannot launch {self._executable.describe()}: {error.message.splitlines()[0]}"
            ) from error
        live = _LiveBrowser(
            browser=browser, generation=self._generation, account=account, proxy=proxy
        )
        browser.on("disconnected", lambda _: self._on_disconnected(live))
        logger.debug("launched %s", self._describe(live))
        return live

    @staticmethod
    def _describe(live: _LiveBrowser) -> str:
        owner = f"account {live.account!r}" if live.account else "shared"
        return f"browser generation {live.generation} ({owner})"

    def _on_disconnected(self, live: _LiveBrowser) -> None:
        if not live.retiring:
            logger.warning("%s disconnected", self._describe(live))

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

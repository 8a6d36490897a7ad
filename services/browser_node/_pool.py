"""Warm Chromium behind one Playwright driver; each session gets a fresh context and page.

Account-less sessions share one browser. A session of an account runs in that account's own
browser (launched with the account's proxy), never shared with another account or with
account-less sessions; idle account browsers close after a while, and at most
`max_account_browsers` stay open (the least recently used goes first).

A browser is recycled after `recycle_after` sessions, or once its own processes use more than
`recycle_above_mb` (checked in the background every `memory_check_interval`), and relaunched
when it crashed: it takes no new sessions, the ones in it finish, the next session gets a fresh
browser. Launches go through one `LaunchGate`, at least `launch_spacing` apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from playwright._repo_version import version as PLAYWRIGHT_VERSION
from playwright.async_api import Browser, Page, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from services import __version__
from services.browser_node._accounts import AccountState, AccountStates, proxy_settings
from services.browser_node._browser import (
    LAUNCH_ARGS,
    BrowserExecutable,
    LaunchGate,
    find_browser,
)
from services.browser_node._emulation import context_options
from services.browser_node._memory import BrowserMemory, memory_readable, read_browser_memory
from services.common.errors import Unavailable
from services.common.types import Cell

logger = logging.getLogger(__name__)

T = TypeVar("T")

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
    # Set when the browser disconnects (crashed, killed, or closed).
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    # The last memory reading, and `served` when it was taken (an unused browser does not grow).
    memory: BrowserMemory | None = None
    measured_after: int = -1
    over_memory: bool = False


class BrowserCrashed(Unavailable):
    """The browser went away while a session's context or page was being opened in it."""


class BrowserPool:
    """Keeps Chromium launched, relaunches it after a crash, recycles it after N sessions or
    above a memory threshold, and spaces launches out.

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
        recycle_above_mb: int = 1024,
        memory_check_interval: timedelta = timedelta(seconds=10),
        launch_spacing: timedelta = timedelta(milliseconds=500),
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
        self._recycle_above_mb = recycle_above_mb
        self._memory_check_interval = memory_check_interval
        self._gate = LaunchGate(spacing=launch_spacing)
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
        self._memory_watch: asyncio.Task[None] | None = None
        self._generation = 0
        # Browsers retired by reason ("sessions", "memory", "crash"), for logs and tests.
        self.recycles: Counter[str] = Counter()
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

    def memory_for(self, account: str = "") -> BrowserMemory | None:
        """The last memory reading of the browser `account` (or account-less sessions) uses."""
        live = self._accounts.get(account) if account else self._current
        return live.memory if live is not None else None

    @property
    def account_browsers(self) -> int:
        return len(self._accounts)

    @property
    def generation(self) -> int:
        """How many browsers this pool has launched."""
        return self._generation

    @property
    def launch_starts(self) -> tuple[float, ...]:
        """When recent launches started (event loop clock)."""
        return tuple(self._gate.starts)

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
        if self._memory_watch is None and self._recycle_above_mb > 0:
            if memory_readable():
                self._memory_watch = asyncio.get_running_loop().create_task(
                    self._watch_memory(), name="browser-memory-watch"
                )
            else:
                logger.info("browser memory cannot be read on this host: no recycling by memory")
        logger.info(
            "browser ready: Chromium %s from %s, Playwright %s",
            self.browser_version,
            self._executable.describe(),
            self.playwright_version,
        )

    async def stop(self) -> None:
        """Close every browser and the driver; safe to call more than once."""
        for task in (self._sweeper, self._memory_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sweeper = self._memory_watch = None
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
        job_id: str = "",
        har_path: Path | None = None,
    ) -> AsyncIterator[Page]:
        """A fresh context and page for one session, closed when the block ends.

        Raises UnknownDevice for a device this Playwright lacks, AccountRefused or
        AccountStateUnavailable when the account's state cannot be had, Unavailable when no
        browser can be launched, BrowserCrashed (an Unavailable) when the browser dies while
        the page opens.
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
        live, state = await self._acquire(account, job_id)
        if state is not None and state.storage_state is not None:
            options["storage_state"] = state.storage_state
        context = None
        try:
            context = await self._while_connected(live, live.browser.new_context(**options))
            page = await self._while_connected(live, context.new_page())
            yield page
        finally:
            if context is not None:
                # A crashed browser can't close its contexts; that's fine, they're gone with it.
                with contextlib.suppress(PlaywrightError, TimeoutError, BrowserCrashed):
                    await self._while_connected(live, context.close())
            await self._release(live)

    async def _while_connected(self, live: _LiveBrowser, operation: Awaitable[T]) -> T:
        """`operation` within the operation timeout, given up as soon as the browser is gone.

        Playwright does not always fail a call in flight when the browser dies (`new_page`
        can wait forever): without this, a kill -9 would cost the session its whole timeout.
        Raises BrowserCrashed, TimeoutError, or what the operation raises.
        """
        task = asyncio.ensure_future(operation)
        gone = asyncio.ensure_future(live.gone.wait())
        try:
            await asyncio.wait(
                (task, gone),
                timeout=self._operation_timeout.total_seconds(),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled():
            return task.result()
        if live.gone.is_set():
            raise BrowserCrashed(f"{self._describe(live)} went away while opening the session")
        seconds = self._operation_timeout.total_seconds()
        raise TimeoutError(f"the browser did not answer within {seconds:g}s")

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _acquire(
        self, account: str, job_id: str = ""
    ) -> tuple[_LiveBrowser, AccountState | None]:
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
                state = await self.accounts.get(account, job_id=job_id, fresh=live is None)
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
            self.recycles["crash"] += 1
            return True
        if self._recycle_after and live.served >= self._recycle_after:
            logger.info("recycling %s after %d sessions", self._describe(live), live.served)
            self.recycles["sessions"] += 1
            return True
        if live.over_memory and live.memory is not None:
            logger.info(
                "recycling %s after %d sessions: %s, above the %d MB threshold",
                self._describe(live),
                live.served,
                live.memory.describe(),
                self._recycle_above_mb,
            )
            self.recycles["memory"] += 1
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

    async def check_memory(self) -> None:
        """Measure the browsers used since their last check; mark those above the threshold.

        A marked browser is retired when its next session asks for it (in-flight sessions
        finish in it), like one that served `recycle_after` sessions.
        """
        if self._recycle_above_mb <= 0:
            return
        for live in [self._current, *self._accounts.values()]:
            if live is None or live.retiring or live.over_memory:
                continue
            if live.served == live.measured_after:
                continue  # no session since the last reading: it has not grown
            served = live.served
            memory = await read_browser_memory(live.browser, timeout=self._operation_timeout)
            if memory is None:
                continue
            live.memory, live.measured_after = memory, served
            logger.debug("%s: %s", self._describe(live), memory.describe())
            if memory.lasting_mb > self._recycle_above_mb:
                live.over_memory = True

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(self._memory_check_interval.total_seconds())
            try:
                await self.check_memory()
            except Exception:
                logger.exception("measuring the browsers' memory failed")

    async def _launch(self, *, account: str = "", proxy: str = "") -> _LiveBrowser:
        assert self._playwright is not None and self._executable is not None
        waited = await self._gate.turn()
        if waited > 0.05:
            logger.debug("browser launch waited %.2fs for its turn", waited)
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
        live.gone.set()
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

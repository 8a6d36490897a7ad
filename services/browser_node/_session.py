"""One session: the default scenario (goto the target, wait for load, measure) and its outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Response
from playwright.async_api import TimeoutError as PlaywrightTimeout

from services.browser_node._allowlist import scheme_allowed, target_allowed
from services.browser_node._pool import BrowserPool
from services.common.durations import format_duration
from services.common.errors import SmartfleetError
from services.common.types import (
    ErrorClass,
    JobEnvelope,
    NavigationTiming,
    Outcome,
    SessionResult,
)

logger = logging.getLogger(__name__)

ENGINE = "chromium"
# Past the session timeout, how long closing the context and measuring may still take.
_TEARDOWN_SLACK = timedelta(seconds=5)
_CRASH_MARKERS = ("crash", "has been closed", "browser has disconnected", "target closed")

_TIMING_SCRIPT = """() => {
  const e = performance.getEntriesByType('navigation')[0];
  if (!e) return null;
  return {
    dns: e.domainLookupEnd - e.domainLookupStart,
    connect: e.connectEnd - e.connectStart,
    ttfb: e.responseStart,
    dcl: e.domContentLoadedEventEnd,
    load: e.loadEventEnd,
  };
}"""


@dataclass(slots=True)
class _Observed:
    """What a session saw so far; partial when it fails half-way."""

    outcome: Outcome = Outcome.OK
    error_class: ErrorClass = ErrorClass.NONE
    error: str = ""
    http_status: int = 0
    final_url: str = ""
    redirect_chain: tuple[str, ...] = ()
    timing: NavigationTiming = field(default_factory=NavigationTiming)
    page_crashed: bool = False
    blocked_url: str = ""

    def fail(self, outcome: Outcome, error_class: ErrorClass, error: str) -> None:
        self.outcome, self.error_class, self.error = outcome, error_class, error


class SessionRunner:
    """Runs one job envelope in a fresh context of the pool; never raises for a session failure."""

    def __init__(
        self,
        *,
        pool: BrowserPool,
        node_id: str,
        default_timeout: timedelta = timedelta(seconds=60),
    ) -> None:
        self._pool = pool
        self._node_id = node_id
        self._default_timeout = default_timeout

    async def run(self, envelope: JobEnvelope) -> SessionResult:
        started_at = datetime.now(UTC)
        started = time.monotonic()
        seen = _Observed()
        if refusal := self._refuse(envelope):
            seen.fail(*refusal)
        else:
            timeout = self._timeout(envelope)
            try:
                await self._navigate(envelope, seen, timeout=timeout)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._classify(error, seen, timeout=timeout)
        return self._result(envelope, seen, started_at=started_at, started=started)

    def cancelled(
        self, envelope: JobEnvelope, *, started_at: datetime | None = None
    ) -> SessionResult:
        """The result of a session stopped (or never started) because its run was cancelled."""
        seen = _Observed()
        seen.fail(Outcome.CANCELLED, ErrorClass.PERMANENT, "the run was cancelled")
        started_at = started_at or datetime.now(UTC)
        started = time.monotonic() - (datetime.now(UTC) - started_at).total_seconds()
        return self._result(envelope, seen, started_at=started_at, started=started)

    def _result(
        self, envelope: JobEnvelope, seen: _Observed, *, started_at: datetime, started: float
    ) -> SessionResult:
        return SessionResult(
            job_id=envelope.job_id,
            attempt=envelope.attempt,
            run_id=envelope.run_id,
            index=envelope.index,
            outcome=seen.outcome,
            error_class=seen.error_class,
            started_at=started_at,
            finished_at=datetime.now(UTC),
            duration_ms=(time.monotonic() - started) * 1000,
            node_id=self._node_id,
            engine=ENGINE,
            error=seen.error,
            http_status=seen.http_status,
            target_url=envelope.target_url,
            final_url=seen.final_url,
            redirect_chain=seen.redirect_chain,
            timing=seen.timing,
            browser_version=self._pool.browser_version,
        )

    def _refuse(self, envelope: JobEnvelope) -> tuple[Outcome, ErrorClass, str] | None:
        """Reasons not to open a browser at all."""
        if envelope.engine and envelope.engine != ENGINE:
            # Another node may serve that engine, so the scheduler may retry it elsewhere.
            return (
                Outcome.INTERNAL_ERROR,
                ErrorClass.TRANSIENT,
                f"engine {envelope.engine!r} is not served by this node (it runs {ENGINE})",
            )
        if not scheme_allowed(envelope.target_url):
            return (
                Outcome.NAVIGATION_ERROR,
                ErrorClass.PERMANENT,
                f"target {envelope.target_url!r} is not an http(s) URL",
            )
        if not target_allowed(envelope.target_url, envelope.allowed_hosts):
            return (
                Outcome.BLOCKED_BY_ALLOWLIST,
                ErrorClass.PERMANENT,
                f"host {urlsplit(envelope.target_url).hostname!r} is not in the run's allowlist",
            )
        return None

    def _timeout(self, envelope: JobEnvelope) -> timedelta:
        return (
            envelope.session_timeout
            if envelope.session_timeout > timedelta()
            else self._default_timeout
        )

    async def _navigate(
        self, envelope: JobEnvelope, seen: _Observed, *, timeout: timedelta
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        # The hard stop also covers a driver that stops answering.
        async with asyncio.timeout(timeout.total_seconds() + _TEARDOWN_SLACK.total_seconds()):
            async with self._pool.session(run_id=envelope.run_id) as page:
                page.on("crash", lambda _: setattr(seen, "page_crashed", True))
                await self._guard_navigations(page, envelope.allowed_hosts, seen)
                remaining_ms = max(1.0, (deadline - loop.time()) * 1000)
                try:
                    response = await page.goto(
                        envelope.target_url, wait_until="load", timeout=remaining_ms
                    )
                except PlaywrightError as error:
                    if not isinstance(error, PlaywrightTimeout) and await _browser_gone(page):
                        seen.page_crashed = True
                    raise
                finally:
                    seen.final_url = page.url if page.url != "about:blank" else ""
                if response is None:
                    seen.fail(
                        Outcome.NAVIGATION_ERROR,
                        ErrorClass.TRANSIENT,
                        "navigation produced no response",
                    )
                    return
                self._record_response(response, seen)
                remaining = max(1.0, deadline - loop.time())
                try:
                    raw = await asyncio.wait_for(page.evaluate(_TIMING_SCRIPT), remaining)
                except (PlaywrightError, TimeoutError) as error:
                    # The page answered; missing timings don't make the session fail.
                    logger.debug("no navigation timing for %s: %s", envelope.job_id, error)
                else:
                    seen.timing = _timing(raw)

    @staticmethod
    async def _guard_navigations(
        page: Page, allowed_hosts: tuple[str, ...], seen: _Observed
    ) -> None:
        """Fail document requests (redirect hops included) that leave the allowlist, unsent.

        Playwright's `route` sees only the first request of a redirect chain, so this pauses
        documents with CDP's Fetch domain instead; subresources are not paused (no added latency).
        """
        cdp = await page.context.new_cdp_session(page)

        async def on_paused(event: dict[str, Any]) -> None:
            request_id, url = event["requestId"], event["request"]["url"]
            try:
                if target_allowed(url, allowed_hosts):
                    await cdp.send("Fetch.continueRequest", {"requestId": request_id})
                else:
                    seen.blocked_url = url
                    await cdp.send(
                        "Fetch.failRequest",
                        {"requestId": request_id, "errorReason": "BlockedByClient"},
                    )
            except PlaywrightError:
                pass  # the page went away meanwhile

        cdp.on("Fetch.requestPaused", on_paused)
        await cdp.send(
            "Fetch.enable",
            {
                "patterns": [
                    {"urlPattern": "*", "resourceType": "Document", "requestStage": "Request"}
                ]
            },
        )

    @staticmethod
    def _record_response(response: Response, seen: _Observed) -> None:
        chain: list[str] = []
        request = response.request.redirected_from
        while request is not None:
            chain.append(request.url)
            request = request.redirected_from
        seen.redirect_chain = tuple(reversed(chain))
        seen.final_url = response.url
        seen.http_status = response.status
        if response.status >= 500:
            seen.fail(Outcome.HTTP_ERROR, ErrorClass.TRANSIENT, f"HTTP {response.status}")
        elif response.status >= 400:
            seen.fail(Outcome.HTTP_ERROR, ErrorClass.PERMANENT, f"HTTP {response.status}")

    @staticmethod
    def _classify(error: Exception, seen: _Observed, *, timeout: timedelta) -> None:
        if isinstance(error, PlaywrightTimeout | TimeoutError):
            seen.fail(
                Outcome.TIMEOUT,
                ErrorClass.TRANSIENT,
                f"the page did not finish loading within the session timeout of "
                f"{format_duration(timeout)}",
            )
        elif seen.blocked_url:
            host = urlsplit(seen.blocked_url).hostname
            seen.fail(
                Outcome.BLOCKED_BY_ALLOWLIST,
                ErrorClass.PERMANENT,
                f"navigation to {host!r} (from a redirect or the page) is not in the run's allowlist",
            )
        elif isinstance(error, PlaywrightError):
            message = _first_line(error)
            if seen.page_crashed or any(marker in message.lower() for marker in _CRASH_MARKERS):
                seen.fail(Outcome.BROWSER_CRASH, ErrorClass.TRANSIENT, message)
            else:
                seen.fail(Outcome.NAVIGATION_ERROR, ErrorClass.TRANSIENT, message)
        elif isinstance(error, SmartfleetError):
            # The pool could not give a browser (launch failed): the node's fault, not the job's.
            seen.fail(Outcome.BROWSER_CRASH, ErrorClass.TRANSIENT, error.message)
        else:
            logger.exception("session failed unexpectedly")
            seen.fail(
                Outcome.INTERNAL_ERROR, ErrorClass.TRANSIENT, f"{type(error).__name__}: {error}"
            )


async def _browser_gone(page: Page, *, within: timedelta = timedelta(milliseconds=300)) -> bool:
    """After a failed navigation: did the browser go away? (It aborts navigations before it says so.)"""
    browser = page.context.browser
    if browser is None:
        return False
    if browser.is_connected():
        gone = asyncio.Event()

        def on_disconnected(_: object) -> None:
            gone.set()

        browser.once("disconnected", on_disconnected)
        try:
            await asyncio.wait_for(gone.wait(), within.total_seconds())
        except TimeoutError:
            pass
        finally:
            browser.remove_listener("disconnected", on_disconnected)
    return not browser.is_connected()


def _first_line(error: Exception) -> str:
    text = error.message if isinstance(error, PlaywrightError) else str(error)
    return text.strip().splitlines()[0] if text.strip() else ""


def _timing(raw: Any) -> NavigationTiming:
    if not isinstance(raw, dict):
        return NavigationTiming()

    def ms(key: str) -> float:
        value = raw.get(key)
        return max(0.0, float(value)) if isinstance(value, int | float) else 0.0

    return NavigationTiming(
        dns_ms=ms("dns"),
        connect_ms=ms("connect"),
        ttfb_ms=ms("ttfb"),
        dom_content_loaded_ms=ms("dcl"),
        load_ms=ms("load"),
    )

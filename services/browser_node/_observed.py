"""What a session saw so far, and how a Playwright failure is told apart from a browser crash."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Response

from services.common.types import ErrorClass, NavigationTiming, Outcome, StepOutcome, WebVitals

_MAX_REFUSED_HOSTS = 10
_CRASH_MARKERS = ("crash", "has been closed", "browser has disconnected", "target closed")


@dataclass(slots=True)
class Observation:
    """A session's outcome and measurements; partial when it fails half-way."""

    outcome: Outcome = Outcome.OK
    error_class: ErrorClass = ErrorClass.NONE
    error: str = ""
    http_status: int = 0
    final_url: str = ""
    redirect_chain: tuple[str, ...] = ()
    timing: NavigationTiming = field(default_factory=NavigationTiming)
    page_crashed: bool = False
    # A document request the allowlist refused (any frame), and one of the main frame.
    blocked_url: str = ""
    blocked_main_frame: str = ""
    steps: list[StepOutcome] = field(default_factory=list)
    extracted: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    # Of the last document (vitals, bytes) and of the whole session (requests, console errors).
    vitals: WebVitals = field(default_factory=WebVitals)
    bytes_transferred: int = 0
    request_count: int = 0
    console_errors: list[str] = field(default_factory=list)
    # Subresource requests the allowlist refused, and their hosts (the first few).
    refused_requests: int = 0
    refused_hosts: list[str] = field(default_factory=list)

    def refuse_subresource(self, url: str) -> None:
        self.refused_requests += 1
        host = urlsplit(url).hostname or url
        if host not in self.refused_hosts and len(self.refused_hosts) < _MAX_REFUSED_HOSTS:
            self.refused_hosts.append(host)

    def fail(self, outcome: Outcome, error_class: ErrorClass, error: str) -> None:
        self.outcome, self.error_class, self.error = outcome, error_class, error

    def record_response(self, response: Response) -> None:
        """The main document's measurements: status, final URL and the redirects before it."""
        chain: list[str] = []
        request = response.request.redirected_from
        while request is not None:
            chain.append(request.url)
            request = request.redirected_from
        self.redirect_chain = tuple(reversed(chain))
        self.final_url = response.url
        self.http_status = response.status


def first_line(error: BaseException) -> str:
    text = error.message if isinstance(error, PlaywrightError) else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def looks_crashed(error: BaseException) -> bool:
    return any(marker in first_line(error).lower() for marker in _CRASH_MARKERS)


async def browser_gone(page: Page, *, within: timedelta = timedelta(milliseconds=300)) -> bool:
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

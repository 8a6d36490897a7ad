"""How a failing step ends the session: outcome, error class and a message naming the step.

The mapping (docs/browser-node.md has the table): an assertion that does not hold, or an element
that is missing, hidden or not actionable, is `assertion_failed` (permanent: the page is not
what the steps expect); a `wait_for` or `goto` out of time, or any step cut short by the session
timeout, is `timeout` (transient); network failures of a `goto` are `navigation_error`; crashes
`browser_crash`; documents off the allowlist `blocked_by_allowlist`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from services.browser_node._observed import Observation, browser_gone, first_line, looks_crashed
from services.common.durations import format_duration
from services.common.spec import AssertStep, Step, WaitForStep
from services.common.types import ErrorClass, Outcome

_PROXY_ERRORS = ("ERR_PROXY", "ERR_TUNNEL_CONNECTION_FAILED", "ERR_NO_SUPPORTED_PROXIES")


class StepFailed(Exception):
    """A step ended the session (or, when optional and `skippable`, is skipped)."""

    def __init__(
        self, outcome: Outcome, error_class: ErrorClass, message: str, *, skippable: bool = True
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.error_class = error_class
        self.message = message
        self.skippable = skippable


@dataclass(frozen=True, slots=True)
class Budget:
    seconds: float
    # The session's remaining time, not the step's timeout, is the limit.
    by_session: bool

    @property
    def ms(self) -> float:
        return max(1.0, self.seconds * 1000)


def navigation_error_class(message: str, *, account: str) -> ErrorClass:
    """A proxy failure in an account's browser is the account's (its proxy); the rest transient."""
    if account and any(marker in message for marker in _PROXY_ERRORS):
        return ErrorClass.ACCOUNT
    return ErrorClass.TRANSIENT


class StepFailures:
    """Turns what went wrong during a step into the StepFailed that ends (or skips) it."""

    def __init__(
        self, *, page: Page, seen: Observation, account: str, session_timeout: timedelta
    ) -> None:
        self._page = page
        self._seen = seen
        self._account = account
        self._session_timeout = session_timeout

    async def timed_out(self, index: int, step: Step, budget: Budget) -> StepFailed:
        what = f"step {index} ({step.action})"
        if budget.by_session:
            return StepFailed(
                Outcome.TIMEOUT,
                ErrorClass.TRANSIENT,
                f"{what} was cut short by the session timeout of "
                f"{format_duration(self._session_timeout)}",
                skippable=False,
            )
        limit = format_duration(step.timeout)
        if step.wait_for is not None:
            return StepFailed(
                Outcome.TIMEOUT,
                ErrorClass.TRANSIENT,
                f"{what}: {waited_for(step.wait_for)} did not happen within {limit}",
            )
        if step.goto is not None:
            return StepFailed(
                Outcome.TIMEOUT,
                ErrorClass.TRANSIENT,
                f"{what}: the page did not reach '{step.goto.wait_until}' within {limit}",
            )
        if step.assert_ is not None:
            return StepFailed(
                Outcome.ASSERTION_FAILED,
                ErrorClass.PERMANENT,
                f"{what}: expected {expectation(step.assert_)}, not confirmed within {limit}",
            )
        selector = str(getattr(step.params_of(step.action), "selector", ""))
        if not selector:
            return StepFailed(
                Outcome.TIMEOUT, ErrorClass.TRANSIENT, f"{what}: did not finish within {limit}"
            )
        count = await self._count(selector)
        if count == 0:
            found = f"no element matches {selector!r} within {limit}"
        elif count is None:
            found = f"{selector!r} could not be used within {limit}"
        elif not await self._visible(selector):
            found = f"{count} element(s) match {selector!r} but the first stayed hidden for {limit}"
        else:
            found = (
                f"{count} element(s) match {selector!r} but the first was not ready within "
                f"{limit} (disabled, moving or covered by another element)"
            )
        return StepFailed(Outcome.ASSERTION_FAILED, ErrorClass.PERMANENT, f"{what}: {found}")

    async def errored(self, index: int, step: Step, error: PlaywrightError) -> StepFailed:
        what = f"step {index} ({step.action})"
        message = first_line(error)
        if step.goto is not None and not self._seen.page_crashed and await browser_gone(self._page):
            self._seen.page_crashed = True
        if self.crashed(error):
            return StepFailed(
                Outcome.BROWSER_CRASH, ErrorClass.TRANSIENT, f"{what}: {message}", skippable=False
            )
        if self._seen.blocked_main_frame:
            return self.blocked(what)
        if step.goto is not None or "execution context was destroyed" in message.lower():
            return StepFailed(
                Outcome.NAVIGATION_ERROR,
                navigation_error_class(message, account=self._account),
                f"{what}: {message}",
            )
        # An invalid selector, an element of the wrong kind: the steps do not fit the page.
        return StepFailed(Outcome.ASSERTION_FAILED, ErrorClass.PERMANENT, f"{what}: {message}")

    def blocked(self, what: str) -> StepFailed:
        host = urlsplit(self._seen.blocked_main_frame).hostname
        return StepFailed(
            Outcome.BLOCKED_BY_ALLOWLIST,
            ErrorClass.PERMANENT,
            f"{what}: navigation to {host!r} is not in the run's allowlist",
            skippable=False,
        )

    def crashed(self, error: BaseException) -> bool:
        browser = self._page.context.browser
        return (
            self._seen.page_crashed
            or looks_crashed(error)
            or self._page.is_closed()
            or (browser is not None and not browser.is_connected())
        )

    async def _count(self, selector: str) -> int | None:
        try:
            return await asyncio.wait_for(self._page.locator(selector).count(), 1.0)
        except (PlaywrightError, TimeoutError):
            return None

    async def _visible(self, selector: str) -> bool:
        try:
            return await asyncio.wait_for(self._page.locator(selector).first.is_visible(), 1.0)
        except (PlaywrightError, TimeoutError):
            return True  # unknown: say the less specific thing


def expectation(params: AssertStep) -> str:
    if params.status:
        return f"status {params.status}"
    if params.text:
        return f"text {params.text!r} on the page"
    if params.selector:
        if params.count is not None:
            return f"exactly {params.count} element(s) matching {params.selector!r}"
        return f"at least {params.min_count or 1} element(s) matching {params.selector!r}"
    return f"a URL matching {params.url!r}"


def waited_for(params: WaitForStep) -> str:
    if params.selector:
        return f"{params.selector!r} becoming {params.state}"
    if params.url:
        return f"a URL matching {params.url!r}"
    return f"load state '{params.load_state}'"

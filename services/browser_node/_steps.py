"""StepExecutor: a session's declarative steps on one page, each within its own timeout.

A step gets its `timeout`, never more than what is left of the session timeout; a `dwell` is
bounded by the session only. A failing step ends the session with the outcome `_failures.py`
gives it; an `optional` one is recorded `skipped` instead (unless the browser crashed, the
session ran out of time or the allowlist refused a document). See docs/browser-node.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Response
from playwright.async_api import TimeoutError as PlaywrightTimeout

from services.browser_node._allowlist import scheme_allowed, target_allowed
from services.browser_node._artifacts import ArtifactStore
from services.browser_node._failures import Budget, StepFailed, StepFailures, expectation
from services.browser_node._observed import Observation, browser_gone, first_line
from services.browser_node._patterns import dwell_duration, resolve_url, url_matches
from services.browser_node._timing import read_timing
from services.common.durations import format_duration
from services.common.spec import (
    AssertStep,
    ClickStep,
    DwellStep,
    ExtractStep,
    FillStep,
    GotoStep,
    HoverStep,
    PressStep,
    ScreenshotStep,
    ScrollStep,
    SelectStep,
    Step,
    WaitForStep,
)
from services.common.types import ErrorClass, JobEnvelope, Outcome, StepOutcome

logger = logging.getLogger(__name__)

# Past a step's budget, asyncio stops calls that take no timeout of their own (evaluate, keys).
_GUARD_SECONDS = 1.0
_POLL_SECONDS = 0.1
# Extracted values are bounded so a result stays a small message.
MAX_EXTRACT_CHARS = 10_000
MAX_EXTRACT_ITEMS = 1_000

_TEXT_PRESENT = "(text) => (document.body ? document.body.innerText : '').includes(text)"
_ATTRIBUTES = "(els, name) => els.map((e) => e.getAttribute(name) ?? '')"
_TO_BOTTOM = "() => window.scrollTo(0, (document.scrollingElement || document.body).scrollHeight)"


class StepExecutor:
    """Runs the envelope's steps (or the default navigation) on `page`, recording into `seen`.

    Raises StepFailed for the step that ends the session; Playwright errors of the default
    navigation propagate as they are (the session runner classifies them).
    """

    def __init__(
        self,
        *,
        page: Page,
        envelope: JobEnvelope,
        seen: Observation,
        deadline: float,
        session_timeout: timedelta,
        artifacts: ArtifactStore,
    ) -> None:
        self._page = page
        self._envelope = envelope
        self._seen = seen
        self._deadline = deadline
        self._session_timeout = session_timeout
        self._artifacts = artifacts
        self._measured = False
        self._document_status = 0
        # Steps that check the status themselves take over from the goto's own status check.
        self._asserts_status = any(
            s.assert_ is not None and s.assert_.status for s in envelope.steps
        )
        self._artifact_names: set[str] = set()
        self._failures = StepFailures(
            page=page, seen=seen, account=envelope.account, session_timeout=session_timeout
        )
        page.on("response", self._on_response)

    async def run(self) -> None:
        steps = self._envelope.steps
        if not steps or steps[0].goto is None:
            await self.open_target()
        for index, step in enumerate(steps):
            await self._run_step(index, step)

    async def open_target(self) -> None:
        """The default navigation: the target, waiting for `load`, measured."""
        page = self._page
        try:
            response = await page.goto(
                self._envelope.target_url, wait_until="load", timeout=self._remaining_ms()
            )
        except PlaywrightError as error:
            if not isinstance(error, PlaywrightTimeout) and await browser_gone(page):
                self._seen.page_crashed = True
            raise
        finally:
            self._seen.final_url = page.url if page.url != "about:blank" else ""
        await self._navigated(response, label="")

    async def capture_failure(self) -> None:
        """A screenshot of the page as the session failed (unless the policy is `never`)."""
        await self._capture_page("failure" if "failure" not in self._artifact_names else "failed")

    async def capture_final(self) -> None:
        """A screenshot of the page as the session ended well (the policy `always`)."""
        await self._capture_page("final" if "final" not in self._artifact_names else "last")

    async def _capture_page(self, name: str) -> None:
        page = self._page
        if self._envelope.artifacts == "never" or self._seen.page_crashed or page.is_closed():
            return
        key = self._artifact_key(name)
        try:
            await asyncio.wait_for(
                page.screenshot(path=self._artifacts.path(key), timeout=3000), 4.0
            )
        except (PlaywrightError, TimeoutError) as error:
            logger.debug("no %s screenshot for %s: %s", name, self._envelope.job_id, error)
        else:
            self._seen.artifacts.append(key)

    # --------------------------------------------------------------------- one step

    async def _run_step(self, index: int, step: Step) -> None:
        started = time.monotonic()
        remaining = self._remaining()
        if remaining <= 0:
            failure = StepFailed(
                Outcome.TIMEOUT,
                ErrorClass.TRANSIENT,
                f"the session timeout of {format_duration(self._session_timeout)} was reached "
                f"before step {index} ({step.action})",
                skippable=False,
            )
            self._record(index, step, "failed", started, failure.message)
            raise failure
        limit = step.timeout.total_seconds()
        budget = Budget(seconds=min(limit, remaining), by_session=remaining < limit)
        self._seen.blocked_main_frame = ""
        skipped = ""
        failure_or_none: StepFailed | None = None
        try:
            skipped = await self._perform(index, step, budget)
            if self._seen.blocked_main_frame:
                raise self._failures.blocked(f"step {index} ({step.action})")
        except StepFailed as error:
            failure_or_none = error
        except (PlaywrightTimeout, TimeoutError):
            failure_or_none = await self._failures.timed_out(index, step, budget)
        except PlaywrightError as error:
            failure_or_none = await self._failures.errored(index, step, error)
        except asyncio.CancelledError:
            self._record(index, step, "failed", started, "interrupted: the session was stopped")
            raise
        if failure_or_none is None:
            self._record(index, step, "skipped" if skipped else "ok", started, skipped)
        elif step.optional and failure_or_none.skippable:
            self._record(index, step, "skipped", started, failure_or_none.message)
        else:
            self._record(index, step, "failed", started, failure_or_none.message)
            raise failure_or_none

    async def _perform(self, index: int, step: Step, budget: Budget) -> str:
        """Do the step; returns why it was skipped without failing ("" when it ran)."""
        if step.dwell is not None:
            # A dwell is its own duration: bounded by the session, not by the step's timeout.
            return await self._dwell(index, step.dwell)
        async with asyncio.timeout(budget.seconds + _GUARD_SECONDS):
            if step.goto is not None:
                return await self._goto(index, step.goto, budget)
            if step.wait_for is not None:
                return await self._wait_for(step.wait_for, budget)
            if step.click is not None:
                return await self._click(step.click, budget)
            if step.fill is not None:
                return await self._fill(step.fill, budget)
            if step.press is not None:
                return await self._press(step.press, budget)
            if step.select is not None:
                return await self._select(step.select, budget)
            if step.hover is not None:
                return await self._hover(step.hover, budget)
            if step.scroll is not None:
                return await self._scroll(step.scroll, budget)
            if step.extract is not None:
                return await self._extract(step.extract, budget)
            if step.assert_ is not None:
                return await self._assert(index, step.assert_, budget)
            if step.screenshot is not None:
                return await self._screenshot(index, step.screenshot, budget)
        raise StepFailed(
            Outcome.INTERNAL_ERROR, ErrorClass.PERMANENT, f"step {index}: unknown action"
        )

    # --------------------------------------------------------------------- actions

    async def _goto(self, index: int, params: GotoStep, budget: Budget) -> str:
        envelope = self._envelope
        url = resolve_url(
            params.url, target=envelope.target_url, index=envelope.index, run_id=envelope.run_id
        )
        label = f"step {index} (goto): "
        if not scheme_allowed(url):
            raise StepFailed(
                Outcome.NAVIGATION_ERROR,
                ErrorClass.PERMANENT,
                f"{label}{url!r} is not an http(s) URL",
            )
        if not target_allowed(url, envelope.allowed_hosts):
            self._seen.blocked_main_frame = url
            raise self._failures.blocked(f"step {index} (goto)")
        page = self._page
        try:
            response = await page.goto(url, wait_until=params.wait_until, timeout=budget.ms)
        finally:
            if not self._measured:
                self._seen.final_url = page.url if page.url != "about:blank" else ""
        await self._navigated(response, label=label)
        return ""

    async def _wait_for(self, params: WaitForStep, budget: Budget) -> str:
        page = self._page
        if params.selector:
            await page.locator(params.selector).first.wait_for(
                state=params.state, timeout=budget.ms
            )
        elif params.url:
            pattern = params.url
            await page.wait_for_url(lambda url: url_matches(pattern, url), timeout=budget.ms)
        elif params.load_state:
            await page.wait_for_load_state(params.load_state, timeout=budget.ms)
        return ""

    async def _click(self, params: ClickStep, budget: Budget) -> str:
        await self._page.locator(params.selector).first.click(timeout=budget.ms)
        return ""

    async def _fill(self, params: FillStep, budget: Budget) -> str:
        await self._page.locator(params.selector).first.fill(params.value, timeout=budget.ms)
        return ""

    async def _press(self, params: PressStep, budget: Budget) -> str:
        if params.selector:
            await self._page.locator(params.selector).first.press(params.key, timeout=budget.ms)
        else:
            await self._page.keyboard.press(params.key)
        return ""

    async def _select(self, params: SelectStep, budget: Budget) -> str:
        # Strings match an option's value or its label.
        await self._page.locator(params.selector).first.select_option(
            list(params.values), timeout=budget.ms
        )
        return ""

    async def _hover(self, params: HoverStep, budget: Budget) -> str:
        await self._page.locator(params.selector).first.hover(timeout=budget.ms)
        return ""

    async def _scroll(self, params: ScrollStep, budget: Budget) -> str:
        page = self._page
        if params.selector:
            await page.locator(params.selector).first.scroll_into_view_if_needed(timeout=budget.ms)
        elif params.dx or params.dy:
            await page.evaluate("([dx, dy]) => window.scrollBy(dx, dy)", [params.dx, params.dy])
        else:
            await page.evaluate(_TO_BOTTOM)
        return ""

    async def _dwell(self, index: int, params: DwellStep) -> str:
        wait = dwell_duration(
            params, seed=self._envelope.seed, job_index=self._envelope.index, step_index=index
        )
        remaining = self._remaining()
        if wait.total_seconds() > remaining:
            # No point waiting for a timeout that is certain: give the slot back now.
            raise StepFailed(
                Outcome.TIMEOUT,
                ErrorClass.TRANSIENT,
                f"step {index} (dwell): {format_duration(wait)} is longer than what is left "
                f"({format_duration(timedelta(seconds=remaining))}) of the session timeout of "
                f"{format_duration(self._session_timeout)}",
                skippable=False,
            )
        await asyncio.sleep(wait.total_seconds())
        return ""

    async def _extract(self, params: ExtractStep, budget: Budget) -> str:
        locator = self._page.locator(params.selector)
        value: str | list[str]
        if params.all:
            # What is there now (waiting would make an empty list take the whole timeout).
            if params.attribute:
                raw: list[Any] = await locator.evaluate_all(_ATTRIBUTES, params.attribute)
                items = [str(item) for item in raw]
            else:
                items = [text.strip() for text in await locator.all_inner_texts()]
            value = [_clip(item) for item in items[:MAX_EXTRACT_ITEMS]]
        elif params.attribute:
            found = await locator.first.get_attribute(params.attribute, timeout=budget.ms)
            value = _clip(found or "")
        else:
            value = _clip((await locator.first.inner_text(timeout=budget.ms)).strip())
        self._seen.extracted[params.name] = value
        return ""

    async def _screenshot(self, index: int, params: ScreenshotStep, budget: Budget) -> str:
        if self._envelope.artifacts == "never":
            return "not taken: the run's artifacts policy is 'never'"
        name = params.name or f"step-{index}"
        if name in self._artifact_names:
            name = f"{name}-{index}"
        key = self._artifact_key(name)
        path = self._artifacts.path(key)
        if params.selector:
            await self._page.locator(params.selector).first.screenshot(path=path, timeout=budget.ms)
        else:
            await self._page.screenshot(path=path, full_page=params.full_page, timeout=budget.ms)
        self._seen.artifacts.append(key)
        return ""

    async def _assert(self, index: int, params: AssertStep, budget: Budget) -> str:
        """Check until it holds or the step's time is up (like Playwright's `expect`)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + budget.seconds
        while True:
            held, found = await self._probe(params)
            if held:
                return ""
            left = until - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(_POLL_SECONDS, left))
        expected = expectation(params)
        if budget.by_session:
            raise StepFailed(
                Outcome.TIMEOUT,
                ErrorClass.TRANSIENT,
                f"step {index} (assert) was cut short by the session timeout of "
                f"{format_duration(self._session_timeout)}: expected {expected}, found {found}",
                skippable=False,
            )
        raise StepFailed(
            Outcome.ASSERTION_FAILED,
            ErrorClass.PERMANENT,
            f"step {index} (assert): expected {expected}, found {found} "
            f"(checked for {format_duration(timedelta(seconds=budget.seconds))})",
        )

    async def _probe(self, params: AssertStep) -> tuple[bool, str]:
        page = self._page
        if params.status:
            status = self._document_status
            return status == params.status, f"status {status}" if status else "no document yet"
        try:
            if params.text:
                present = await page.evaluate(_TEXT_PRESENT, params.text)
                return bool(present), "no such text"
            if params.selector:
                count = await page.locator(params.selector).count()
                if params.count is not None:
                    return count == params.count, str(count)
                return count >= (params.min_count or 1), str(count)
        except PlaywrightError as error:
            # Mid-navigation the page cannot answer: try again, unless it is gone for good.
            if self._failures.crashed(error):
                raise
            return False, f"an error ({first_line(error)})"
        return url_matches(params.url, page.url), f"URL {page.url}"

    # --------------------------------------------------------------------- outcomes

    async def _navigated(self, response: Response | None, *, label: str) -> None:
        if response is not None:
            self._document_status = response.status
        if not self._measured:
            # The first navigation is the one measured (status, URL, redirects, timings).
            self._measured = True
            if response is None:
                raise StepFailed(
                    Outcome.NAVIGATION_ERROR,
                    ErrorClass.TRANSIENT,
                    f"{label}navigation produced no response",
                )
            self._seen.record_response(response)
            # The page answered; missing timings don't make the session fail.
            timing = await read_timing(self._page, within=max(1.0, self._remaining()))
            if timing is not None:
                self._seen.timing = timing
        if response is not None and response.status >= 400 and not self._asserts_status:
            status = response.status
            raise StepFailed(
                Outcome.HTTP_ERROR,
                ErrorClass.TRANSIENT if status >= 500 else ErrorClass.PERMANENT,
                f"{label}HTTP {status}" + (f" from {response.url}" if label else ""),
            )

    # --------------------------------------------------------------------- bookkeeping

    def _on_response(self, response: Response) -> None:
        # The main document's status, also after navigations a click started.
        request = response.request
        if (
            request.is_navigation_request()
            and request.frame.parent_frame is None
            and not 300 <= response.status < 400
        ):
            self._document_status = response.status

    def _record(self, index: int, step: Step, status: str, started: float, error: str) -> None:
        self._seen.steps.append(
            StepOutcome(
                index=index,
                action=step.action,
                status=status,
                duration_ms=(time.monotonic() - started) * 1000,
                error=error,
            )
        )

    def _artifact_key(self, name: str) -> str:
        self._artifact_names.add(name)
        envelope = self._envelope
        return self._artifacts.key(
            run_id=envelope.run_id, job_id=envelope.job_id, attempt=envelope.attempt, name=name
        )

    def _remaining(self) -> float:
        return self._deadline - asyncio.get_running_loop().time()

    def _remaining_ms(self) -> float:
        return max(1.0, self._remaining() * 1000)


def _clip(text: str) -> str:
    return text[:MAX_EXTRACT_CHARS]

"""Session measurements on real Chromium against the demo site: Web Vitals, traffic, console errors."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from demo.site import DemoSite
from services.browser_node import BrowserPool, SessionRunner
from services.browser_node._measurements import MAX_CONSOLE_ERRORS
from services.common.spec import Step
from services.common.types import JobEnvelope, Outcome, SessionResult

# One browser pool for the module: the tests share its event loop.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(30),
    pytest.mark.asyncio(loop_scope="module"),
]

_jobs = itertools.count(1)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool() -> AsyncIterator[BrowserPool]:
    async with BrowserPool() as browser_pool:
        yield browser_pool


@pytest.fixture
def runner(pool: BrowserPool) -> SessionRunner:
    return SessionRunner(pool=pool, node_id="node-measure")


def job(target: str, *steps: dict[str, Any]) -> JobEnvelope:
    return JobEnvelope(
        job_id=f"measure-{next(_jobs)}",
        attempt=1,
        run_id="run-measure",
        index=0,
        target_url=target,
        engine="chromium",
        session_timeout=timedelta(seconds=10),
        deadline=datetime.now(UTC) + timedelta(minutes=1),
        steps=tuple(Step.model_validate(step) for step in steps),
    )


def ok(result: SessionResult) -> SessionResult:
    assert result.outcome is Outcome.OK, result.error
    return result


async def test_home_page_has_vitals_traffic_and_ordered_timing(
    runner: SessionRunner, demo_site: DemoSite
) -> None:
    """The default scenario on `/` reports TTFB, FCP, LCP, CLS, bytes, requests and ordered timing."""
    result = ok(await runner.run(job(f"{demo_site.url}/")))
    vitals, timing = result.vitals, result.timing
    assert vitals.ttfb_ms > 0
    assert vitals.fcp_ms > 0
    assert vitals.lcp_ms > 0
    assert vitals.cls >= 0
    assert result.bytes_transferred > 0
    assert result.request_count >= 1
    assert result.console_errors == ()
    assert timing.dns_ms <= timing.connect_ms <= timing.ttfb_ms <= timing.load_ms


async def test_slow_page_ttfb_is_its_delay(runner: SessionRunner, demo_site: DemoSite) -> None:
    """A page answering after 800 ms has a TTFB of at least 700 ms, far above a fast page's."""
    fast = ok(await runner.run(job(f"{demo_site.url}/")))
    slow = ok(await runner.run(job(f"{demo_site.url}/slow?ms=800")))
    assert slow.vitals.ttfb_ms >= 700
    assert slow.timing.ttfb_ms >= 700
    assert fast.vitals.ttfb_ms < slow.vitals.ttfb_ms / 3


async def test_console_and_uncaught_errors_are_collected(
    runner: SessionRunner, demo_site: DemoSite
) -> None:
    """`console.error` and an uncaught exception both land in console_errors; the session is ok."""
    result = ok(await runner.run(job(f"{demo_site.url}/console-error")))
    assert any("demo error" in message for message in result.console_errors)
    assert any("demo uncaught error" in message for message in result.console_errors)
    assert len(result.console_errors) <= MAX_CONSOLE_ERRORS


async def test_steps_sessions_are_measured_across_navigations(
    runner: SessionRunner, demo_site: DemoSite
) -> None:
    """With steps, requests count every navigation and vitals come from the last document."""
    result = ok(
        await runner.run(
            job(
                f"{demo_site.url}/",
                {"goto": {"url": "{target}"}},
                {"goto": {"url": "/console-error"}},
                {"goto": {"url": "/about"}},
            )
        )
    )
    assert result.request_count >= 3
    assert result.vitals.fcp_ms > 0 and result.vitals.lcp_ms > 0
    assert result.bytes_transferred > 0
    assert any("demo uncaught error" in message for message in result.console_errors)

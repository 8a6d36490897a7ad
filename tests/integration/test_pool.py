"""The browser pool against real Chromium and the demo site: recycling, memory, staggered launches."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Browser

from demo.site import DemoSite
from services.browser_node import AccountState, AccountStates, BrowserPool, SessionRunner
from services.browser_node._browser import LaunchGate
from services.browser_node._memory import read_browser_memory
from services.common.types import ErrorClass, JobEnvelope, Outcome, SessionResult

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

_jobs = itertools.count(1)


def envelope(url: str, *, account: str = "", timeout: float = 20) -> JobEnvelope:
    return JobEnvelope(
        job_id=f"job-{next(_jobs)}",
        attempt=1,
        run_id="run-pool",
        index=0,
        target_url=url,
        engine="chromium",
        account=account,
        session_timeout=timedelta(seconds=timeout),
        deadline=datetime.now(UTC) + timedelta(minutes=1),
    )


def ok(result: SessionResult) -> SessionResult:
    assert result.outcome is Outcome.OK, f"{result.outcome}: {result.error}"
    return result


class LocalAccounts:
    """Account state without a scheduler: every account exists, empty, without a proxy."""

    async def get_account_state(self, account: str, *, job_id: str) -> AccountState:
        return AccountState(account=account)

    async def put_account_state(self, state: AccountState, *, job_id: str) -> None:
        return None


@pytest.fixture
async def pool() -> AsyncIterator[BrowserPool]:
    async with BrowserPool() as browser_pool:
        yield browser_pool


async def eventually(check: Callable[[], Any], *, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def until_closed(browser: Browser) -> bool:
    await eventually(lambda: not browser.is_connected(), what="the browser to close")
    return True


async def browser_pid(pool: BrowserPool, *, detach: bool = True) -> int:
    """The process id of the pool's shared browser, as the browser itself reports it."""
    browser = pool.browser_for()
    assert browser is not None
    cdp = await browser.new_browser_cdp_session()
    processes = (await cdp.send("SystemInfo.getProcessInfo"))["processInfo"]
    if detach:
        await cdp.detach()
    return int(next(p["id"] for p in processes if p["type"] == "browser"))


# --- recycling after N sessions ---------------------------------------------------------------


async def test_recycles_after_n_sessions_and_closes_old_browsers(demo_site: DemoSite) -> None:
    """With recycle_after=3, 7 sessions all succeed on 3 browsers in turn; the retired two close."""
    async with BrowserPool(recycle_after=3, launch_spacing=timedelta(0)) as pool:
        runner = SessionRunner(pool=pool, node_id="node-pool")
        used: list[Browser] = []
        for _ in range(7):
            ok(await runner.run(envelope(f"{demo_site.url}/about")))
            browser = pool.browser_for()
            assert browser is not None
            used.append(browser)
        assert pool.generation == 3 and pool.recycles["sessions"] == 2
        first, second, third = used[0], used[3], used[6]
        assert used == [first] * 3 + [second] * 3 + [third]
        assert len({id(first), id(second), id(third)}) == 3
        assert await until_closed(first) and await until_closed(second)
        assert third.is_connected()


async def test_recycle_lets_sessions_in_flight_finish(demo_site: DemoSite) -> None:
    """A browser due for recycling finishes its running session; the next one gets a new browser."""
    async with BrowserPool(recycle_after=1, launch_spacing=timedelta(0)) as pool:
        runner = SessionRunner(pool=pool, node_id="node-pool")
        # Slow enough to outlast a relaunch on a busy machine.
        slow = asyncio.create_task(runner.run(envelope(f"{demo_site.url}/slow?ms=8000")))
        await eventually(lambda: demo_site.hits.get("/slow"), what="the slow page")
        old = pool.browser_for()
        assert old is not None
        ok(await runner.run(envelope(f"{demo_site.url}/about")))
        assert pool.browser_for() is not old
        assert not slow.done() and old.is_connected()  # still serving the slow session
        ok(await slow)
        assert await until_closed(old)


# --- crash recovery ------------------------------------------------------------------------------


async def test_kill_9_mid_session_fails_only_the_sessions_in_flight(
    pool: BrowserPool, demo_site: DemoSite
) -> None:
    """kill -9 of the browser: the 3 sessions in it end browser_crash, the next ones get a new one."""
    runner = SessionRunner(pool=pool, node_id="node-pool")
    killed = pool.browser_for()
    assert killed is not None
    running = [
        asyncio.create_task(runner.run(envelope(f"{demo_site.url}/slow?ms=4000"))) for _ in range(3)
    ]
    await eventually(lambda: demo_site.hits.get("/slow", 0) >= 3, what="3 slow pages")
    os.kill(await browser_pid(pool), signal.SIGKILL)
    crashed = await asyncio.gather(*running)
    assert {(r.outcome, r.error_class) for r in crashed} == {
        (Outcome.BROWSER_CRASH, ErrorClass.TRANSIENT)
    }
    again = await asyncio.gather(
        *(runner.run(envelope(f"{demo_site.url}/about")) for _ in range(3))
    )
    for result in again:
        ok(result)
    assert pool.recycles["crash"] == 1 and pool.generation == 2
    assert pool.browser_for() is not killed and not killed.is_connected()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.15])
async def test_kill_9_while_a_session_opens_fails_it_at_once(
    demo_site: DemoSite, delay: float
) -> None:
    """A browser killed while a session opens its context or page ends it browser_crash at once."""
    async with BrowserPool(launch_spacing=timedelta(0)) as pool:
        runner = SessionRunner(pool=pool, node_id="node-pool")
        # A browser-wide CDP session stays attached, as during a memory check: Playwright's
        # new_page then never answers once the browser is gone.
        pid = await browser_pid(pool, detach=False)
        began = time.monotonic()
        running = asyncio.create_task(runner.run(envelope(f"{demo_site.url}/about", timeout=20)))
        await asyncio.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        crashed = await running
        assert (crashed.outcome, crashed.error_class) == (
            Outcome.BROWSER_CRASH,
            ErrorClass.TRANSIENT,
        ), crashed.error
        assert time.monotonic() - began < 10  # not the 20 s session timeout
        ok(await runner.run(envelope(f"{demo_site.url}/about")))


# --- recycling above a memory threshold -------------------------------------------------------


async def test_memory_reader_measures_the_live_browser(
    pool: BrowserPool, demo_site: DemoSite
) -> None:
    """The reader finds the browser's processes (a renderer per open page) and plausible PSS."""
    browser = pool.browser_for()
    assert browser is not None
    async with pool.session(run_id="run-pool") as page:
        await page.goto(f"{demo_site.url}/products")
        memory = await read_browser_memory(browser, timeout=timedelta(seconds=10))
    assert memory is not None
    kinds = [process.kind for process in memory.processes]
    assert kinds.count("browser") == 1 and memory.renderers >= 1
    assert memory.source == "pss"  # Linux with smaps_rollup
    assert 20 < memory.lasting_mb < memory.total_mb < 4096
    assert all(process.mb > 0 for process in memory.processes)


async def test_recycles_above_memory_threshold(demo_site: DemoSite) -> None:
    """With a 1 MB threshold the background check marks the browser; the next session recycles it."""
    async with BrowserPool(
        recycle_above_mb=1,
        memory_check_interval=timedelta(milliseconds=100),
        launch_spacing=timedelta(0),
    ) as pool:
        runner = SessionRunner(pool=pool, node_id="node-pool")
        ok(await runner.run(envelope(f"{demo_site.url}/about")))
        first = pool.browser_for()
        assert first is not None
        await eventually(lambda: pool.memory_for() is not None, what="a memory reading")
        measured = pool.memory_for()
        assert measured is not None and measured.lasting_mb > 1
        ok(await runner.run(envelope(f"{demo_site.url}/about")))
        assert pool.recycles["memory"] == 1 and pool.generation == 2
        assert pool.browser_for() is not first
        assert await until_closed(first)


async def test_no_memory_check_for_an_unused_browser(demo_site: DemoSite) -> None:
    """A browser that served no session since its last reading is not measured again."""
    async with BrowserPool(
        recycle_above_mb=100_000, memory_check_interval=timedelta(hours=1)
    ) as pool:
        runner = SessionRunner(pool=pool, node_id="node-pool")
        ok(await runner.run(envelope(f"{demo_site.url}/about")))
        await pool.check_memory()
        first = pool.memory_for()
        assert first is not None
        await pool.check_memory()
        assert pool.memory_for() is first  # same reading
        ok(await runner.run(envelope(f"{demo_site.url}/about")))
        await pool.check_memory()
        assert pool.memory_for() is not first and pool.recycles["memory"] == 0


# --- staggered launches ------------------------------------------------------------------------


async def test_account_browsers_launch_staggered(demo_site: DemoSite) -> None:
    """Four account browsers asked for at once start launching at least the spacing apart."""
    spacing = timedelta(milliseconds=600)
    async with BrowserPool(
        accounts=AccountStates(source=LocalAccounts()), launch_spacing=spacing
    ) as pool:
        runner = SessionRunner(pool=pool, node_id="node-pool")
        results = await asyncio.gather(
            *(
                runner.run(envelope(f"{demo_site.url}/about", account=name))
                for name in ("ann", "ben", "cid", "dot")
            )
        )
        for result in results:
            ok(result)
        starts = pool.launch_starts
        assert len(starts) == 5 and pool.account_browsers == 4  # the shared one, then 4
        gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
        assert min(gaps) >= spacing.total_seconds(), gaps


async def test_warm_sessions_never_wait_for_the_launch_gate(demo_site: DemoSite) -> None:
    """Right after a launch, with a 60 s spacing, sessions in the warm browser start at once."""
    async with BrowserPool(launch_spacing=timedelta(seconds=60)) as pool:
        runner = SessionRunner(pool=pool, node_id="node-pool")
        began = time.monotonic()
        for _ in range(3):
            ok(await runner.run(envelope(f"{demo_site.url}/about")))
        assert time.monotonic() - began < 30 and pool.generation == 1


async def test_launch_gate_spaces_starts_in_arrival_order() -> None:
    """Concurrent turns start one spacing apart (plus jitter), the first at once."""
    gate = LaunchGate(spacing=timedelta(milliseconds=150), jitter=0.2)
    waits: list[Any] = await asyncio.gather(*(gate.turn() for _ in range(4)))
    assert waits[0] < 0.05
    gaps = [later - earlier for earlier, later in itertools.pairwise(gate.starts)]
    assert all(0.15 <= gap < 0.15 * 1.2 + 0.5 for gap in gaps), gaps  # + event loop lag

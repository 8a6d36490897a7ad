"""RecurringTask: rounds every interval, failures and overruns logged without ending the loop."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from services.common.recurring import RecurringTask


async def test_a_failing_round_is_logged_and_the_next_one_still_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first round raises, the following ones run anyway; stop() ends the task."""
    calls = 0
    third = asyncio.Event()

    async def job() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        if calls == 1:
            raise RuntimeError("first round breaks")

    task = RecurringTask("test-sweep", job, interval=timedelta(milliseconds=10), run_first=True)
    with caplog.at_level(logging.ERROR):
        task.start()
        await asyncio.wait_for(third.wait(), 5)
        await task.stop()
    assert not task.running
    assert "test-sweep: a round failed" in caplog.text
    await task.stop()  # idempotent


async def test_a_round_over_its_timeout_is_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    """A round that hangs is cut off at the timeout, logged, and round() reports failure."""
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = RecurringTask(
        "test-hang", hang, interval=timedelta(seconds=1), timeout=timedelta(milliseconds=20)
    )
    with caplog.at_level(logging.WARNING):
        assert await task.round() is False
    assert cancelled.is_set()
    assert "test-hang: a round ran over" in caplog.text


async def test_trigger_runs_the_next_round_at_once() -> None:
    """trigger() cuts the wait short: a round with a one-hour interval still comes."""
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    task = RecurringTask("test-trigger", job, interval=timedelta(hours=1))
    task.start()
    task.trigger()
    await asyncio.wait_for(ran.wait(), 5)
    await task.stop()


def test_interval_must_be_positive() -> None:
    """A zero interval is refused at construction."""
    with pytest.raises(ValueError, match="interval must be positive"):
        RecurringTask("bad", asyncio.sleep, interval=timedelta(0))

"""Browser node parts that need no network: browser discovery, allowlist, backoff, batching."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.browser_node import find_browser
from services.browser_node._allowlist import scheme_allowed, target_allowed
from services.browser_node._backoff import Backoff
from services.browser_node._reporter import ResultReporter
from services.common.errors import BrowserNotFound, SmartfleetError, Unavailable
from services.common.types import ErrorClass, Outcome, SessionResult

pytestmark = pytest.mark.timeout(10)


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_explicit_browser_path_wins(tmp_path: Path) -> None:
    """SMARTFLEET_BROWSER_PATH is used as given, even when other browsers exist."""
    chosen = executable(tmp_path / "my-chrome")
    other = executable(tmp_path / "chromium")
    found = find_browser(str(chosen), playwright_executable=str(other), search_path=str(tmp_path))
    assert (found.path, found.source) == (str(chosen), "explicit")


def test_explicit_browser_path_missing_is_an_error(tmp_path: Path) -> None:
    """A wrong explicit path fails loudly instead of silently using another browser."""
    executable(tmp_path / "chromium")
    with pytest.raises(BrowserNotFound, match="SMARTFLEET_BROWSER_PATH"):
        find_browser(str(tmp_path / "nope"), search_path=str(tmp_path))


def test_playwright_browser_preferred_over_system(tmp_path: Path) -> None:
    """An installed Playwright Chromium is launched without executable_path."""
    bundled = executable(tmp_path / "chrome")
    executable(tmp_path / "chromium")
    found = find_browser(None, playwright_executable=str(bundled), search_path=str(tmp_path))
    assert (found.path, found.source) == (None, "playwright")


def test_system_chromium_found_on_path(tmp_path: Path) -> None:
    """Without Playwright's browser, a Chromium on PATH is used, in the documented order."""
    executable(tmp_path / "google-chrome")
    executable(tmp_path / "chromium-browser")
    found = find_browser(
        None, playwright_executable=str(tmp_path / "not-installed"), search_path=str(tmp_path)
    )
    assert (found.path, found.source) == (str(tmp_path / "chromium-browser"), "system")


def test_no_browser_says_how_to_install(tmp_path: Path) -> None:
    """With no browser anywhere the error tells the operator how to install one."""
    with pytest.raises(BrowserNotFound, match="playwright install chromium"):
        find_browser(None, playwright_executable=None, search_path=str(tmp_path))


@pytest.mark.parametrize(
    ("url", "allowed", "expected"),
    [
        ("https://anything.example.org/", (), False),
        ("http://127.0.0.1:8080/", (), True),
        ("https://anything.example.org/", ("*",), True),
        ("http://127.0.0.1:8080/", ("example.com",), True),
        ("http://localhost/", ("example.com",), True),
        ("https://example.com/a", ("example.com",), True),
        ("https://shop.example.com/", ("*.example.com",), True),
        ("https://evil-example.com/", ("*.example.com",), False),
        ("http://169.254.169.254/latest/meta-data/", ("example.com",), False),
        ("http://10.0.0.5/", ("example.com",), False),
    ],
)
def test_target_allowlist(url: str, allowed: tuple[str, ...], expected: bool) -> None:
    """The node applies the scheduler's host rule to the list in the envelope."""
    assert target_allowed(url, allowed) is expected


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "data:text/html,hi", "javascript:alert(1)", "chrome://version"]
)
def test_only_web_schemes(url: str) -> None:
    """Sessions never open local files or browser-internal pages."""
    assert not scheme_allowed(url)


def test_backoff_grows_caps_and_resets() -> None:
    """Delays grow towards the maximum, never exceed it, and start over after reset()."""
    backoff = Backoff(initial=timedelta(seconds=1), maximum=timedelta(seconds=8))
    delays = [backoff.next() for _ in range(10)]
    assert all(timedelta(seconds=0.5) <= delay <= timedelta(seconds=8) for delay in delays)
    backoff.reset()
    assert backoff.next() <= timedelta(seconds=1)


def result(job_id: str) -> SessionResult:
    now = datetime.now(UTC)
    return SessionResult(
        job_id=job_id,
        attempt=1,
        run_id="run-1",
        index=0,
        outcome=Outcome.OK,
        error_class=ErrorClass.NONE,
        started_at=now,
        finished_at=now,
        duration_ms=1.0,
    )


class RecordingLink:
    """Stands in for SchedulerLink.report_results: fails `outages` calls, then stores."""

    def __init__(self, *, outages: int = 0, refuse: frozenset[str] = frozenset()) -> None:
        self.calls: list[list[str]] = []
        self.outages = outages
        self.refuse = refuse

    async def report_results(self, results: Sequence[SessionResult]) -> set[tuple[str, int]]:
        self.calls.append([r.job_id for r in results])
        if self.outages:
            self.outages -= 1
            raise Unavailable("scheduler ReportResults: UNAVAILABLE: down")
        return {(r.job_id, r.attempt) for r in results if r.job_id not in self.refuse}


async def test_reporter_batches_within_linger() -> None:
    """Results finishing together leave in one call, each caller learns it was stored."""
    link = RecordingLink()
    reporter = ResultReporter(link=link, batch_size=10, linger=timedelta(milliseconds=50))  # type: ignore[arg-type]
    reporter.start()
    stored = await asyncio.gather(*(reporter.report(result(f"job-{n}")) for n in range(5)))
    await reporter.stop()
    assert stored == [True] * 5
    assert link.calls == [[f"job-{n}" for n in range(5)]]


async def test_reporter_splits_at_batch_size() -> None:
    """No call carries more than batch_size results."""
    link = RecordingLink()
    reporter = ResultReporter(link=link, batch_size=2, linger=timedelta(milliseconds=50))  # type: ignore[arg-type]
    reporter.start()
    await asyncio.gather(*(reporter.report(result(f"job-{n}")) for n in range(5)))
    await reporter.stop()
    assert [len(call) for call in link.calls] == [2, 2, 1]


async def test_reporter_retries_outage_and_reports_refusals() -> None:
    """An unreachable scheduler is retried; a result it does not list as stored returns False."""
    link = RecordingLink(outages=2, refuse=frozenset({"job-bad"}))
    reporter = ResultReporter(
        link=link,  # type: ignore[arg-type]
        linger=timedelta(milliseconds=10),
        retry=Backoff(initial=timedelta(milliseconds=10), maximum=timedelta(milliseconds=20)),
    )
    reporter.start()
    stored = await asyncio.gather(
        reporter.report(result("job-ok")), reporter.report(result("job-bad"))
    )
    await reporter.stop()
    assert stored == [True, False]
    assert len(link.calls) == 3


async def test_reporter_not_running_refuses() -> None:
    """Reporting before start() is an error the worker turns into a nak, not a hang."""
    reporter = ResultReporter(link=RecordingLink())  # type: ignore[arg-type]
    with pytest.raises(SmartfleetError):
        await reporter.report(result("job-1"))


def test_node_labels_carry_the_browser_major_version() -> None:
    """A node labels itself browser=<major> so runs can require a version; the operator's label and the label limit win."""
    from services.browser_node.server import version_labels

    assert version_labels({"region": "eu"}, "156.0.8078.79") == {"region": "eu", "browser": "156"}
    assert version_labels({"browser": "canary"}, "156.0.1") == {"browser": "canary"}
    full = {"a": "1", "b": "2", "c": "3", "d": "4"}
    assert version_labels(full, "156.0.1") == full
    assert version_labels({}, "") == {}

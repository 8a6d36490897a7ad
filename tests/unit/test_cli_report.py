"""`run report`: JUnit XML parsed back by xml.etree, the HTML page opened in real Chromium."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from xml.etree import ElementTree

import pytest

from cli._report_build import build_report, html_report, junit_xml
from smartfleet.v1 import common_pb2, results_pb2, runs_pb2

EVIL_NAME = "<script>window.pwned = 1</script> & co"
CELL_A = "Desktop Chrome / default locale / chromium"
CELL_B = "Pixel 7 / default locale / chromium"


def png(width: int = 4, height: int = 3) -> bytes:
    """A small valid red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def result(
    index: int, target: str, cell: str, outcome: int, error: str = "", attempt: int = 1
) -> results_pb2.SessionResult:
    return results_pb2.SessionResult(
        job_id=f"run-1-{index}",
        index=index,
        attempt=attempt,
        target_url=target,
        cell=runs_pb2.Cell(key=cell),
        outcome=outcome,  # type: ignore[arg-type]
        error=error,
        duration_ms=1200,
    )


def sample() -> tuple[runs_pb2.Run, runs_pb2.RunStats, list[results_pb2.SessionResult]]:
    run = runs_pb2.Run(
        id="run-1",
        name=EVIL_NAME,
        status=runs_pb2.RUN_STATUS_COMPLETED,
        spec=runs_pb2.RunSpec(targets=["http://shop.test/", "http://shop.test/cart"], sessions=6),
        counters=runs_pb2.RunCounters(planned=6, succeeded=3, failed=3),
    )
    run.started_at.GetCurrentTime()
    stats = runs_pb2.RunStats(
        run_id="run-1",
        results=6,
        outcomes=[
            runs_pb2.OutcomeCount(outcome=common_pb2.OUTCOME_OK, count=3),
            runs_pb2.OutcomeCount(outcome=common_pb2.OUTCOME_ASSERTION_FAILED, count=3),
        ],
        success_rate=0.5,
        duration_p50_ms=1200,
        duration_p95_ms=1900,
        duration_max_ms=2000,
        metrics=[runs_pb2.MetricStats(name="lcp_ms", p50=300, p95=900, p99=1200, count=6)],
    )
    ok, failed = common_pb2.OUTCOME_OK, common_pb2.OUTCOME_ASSERTION_FAILED
    expected = "step 4 (assert): expected text 'Order <placed>' on the page"
    results = [
        result(0, "http://shop.test/", CELL_A, ok),
        result(1, "http://shop.test/cart", CELL_A, failed, expected),
        result(2, "http://shop.test/", CELL_B, ok),
        result(3, "http://shop.test/cart", CELL_B, failed, expected),
        # job 4 failed once, then passed on its retry: it counts as ok.
        result(4, "http://shop.test/", CELL_A, common_pb2.OUTCOME_TIMEOUT, "timeout"),
        result(4, "http://shop.test/", CELL_A, ok, attempt=2),
        result(5, "http://shop.test/cart", CELL_A, failed, expected),
    ]
    return run, stats, results


def test_junit_has_a_testcase_per_target_and_cell_with_failures_and_counts() -> None:
    """One testsuite per run, one testcase per target x cell; a failure carries the error and the count."""
    run, stats, results = sample()
    root = ElementTree.fromstring(junit_xml(build_report(run, stats, results)))
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == EVIL_NAME and suite.get("id") == "run-1"
    cases = {(case.get("classname"), case.get("name")): case for case in suite.findall("testcase")}
    assert set(cases) == {
        ("http://shop.test/", CELL_A), ("http://shop.test/", CELL_B),
        ("http://shop.test/cart", CELL_A), ("http://shop.test/cart", CELL_B),
    }  # fmt: skip
    assert (suite.get("tests"), suite.get("failures")) == ("4", "2")
    assert cases[("http://shop.test/", CELL_A)].find("failure") is None  # the retry passed
    failure = cases[("http://shop.test/cart", CELL_A)].find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("2 of 2 sessions failed: assertion_failed: step 4")
    assert "Order <placed>" in (failure.text or "") and "job run-1-1" in (failure.text or "")
    assert failure.get("type") == "assertion_failed"


def test_html_escapes_everything_and_inlines_screenshots() -> None:
    """The page holds no raw markup from the run; a screenshot is an inline data: URI."""
    run, stats, results = sample()
    model = build_report(run, stats, results)
    page = html_report(model, screenshots={("run-1-1", 1): [("failure.png", png())]})
    assert "<script>" not in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt; &amp; co" in page
    assert "Order &lt;placed&gt;" in page
    assert page.count('src="data:image/png;base64,') == 1
    assert "http://" not in page.split("<body>")[0], "nothing is loaded from elsewhere"


@pytest.mark.browser
async def test_html_report_in_chromium(tmp_path: Path) -> None:
    """Opened in real Chromium: the title, the counts, a decoded inline image, the name as text, no script run."""
    from playwright.async_api import async_playwright

    from services.browser_node._browser import find_browser  # the node's own browser lookup

    run, stats, results = sample()
    page_file = tmp_path / "report.html"
    page_file.write_text(
        html_report(
            build_report(run, stats, results),
            screenshots={("run-1-1", 1): [("failure.png", png())]},
        ),
        encoding="utf-8",
    )
    async with async_playwright() as playwright:
        found = find_browser(
            os.environ.get("SMARTFLEET_BROWSER_PATH"),
            playwright_executable=playwright.chromium.executable_path,
        )
        browser = await playwright.chromium.launch(executable_path=found.path)
        try:
            page = await browser.new_page()
            await page.goto(page_file.as_uri())
            assert await page.title() == f"Smartfleet run {EVIL_NAME}"
            assert await page.locator("h1").inner_text() == f"Smartfleet run {EVIL_NAME}"
            assert await page.evaluate("window.pwned") is None
            assert await page.locator('[data-field="failed"] b').inner_text() == "3"
            assert await page.locator('[data-field="ok"] b').inner_text() == "3"
            image = page.locator("section.failure img")
            assert await image.count() == 1
            assert await image.evaluate("img => img.complete && img.naturalWidth") == 4
            failures = page.locator("section.failure")
            assert await failures.count() == 3
            assert "Order <placed>" in await failures.first.inner_text()
        finally:
            await browser.close()

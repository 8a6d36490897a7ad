"""Web Vitals, traffic and console errors of a session's page, recorded without per-request awaits.

An init script observes `paint`, `largest-contentful-paint` and `layout-shift` in every document
(buffered, so entries from before the observer count too); the session reads them, with the
document's navigation and resource sizes, in one `evaluate` at its end. Requests and console
errors come from page events whose handlers only count and append.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from playwright.async_api import ConsoleMessage, Page, Request
from playwright.async_api import Error as PlaywrightError

from services.browser_node._observed import Observation
from services.common.types import WebVitals

logger = logging.getLogger(__name__)

MAX_CONSOLE_ERRORS = 20
MAX_CONSOLE_ERROR_CHARS = 500

# How long the read waits for a first paint the page has not presented yet.
_PAINT_WAIT = timedelta(milliseconds=500)

# Init scripts run wrapped, so the state goes on `window` explicitly (non-enumerable, so page
# scripts iterating `window` do not trip over it).
_INIT_SCRIPT = """(() => {
  if (window.__smartfleetVitals) return;
  const state = { fcp: 0, lcp: 0, cls: 0, observers: [], painted: [] };
  const take = (type, onEntry) => {
    try {
      const observer = new PerformanceObserver((list) => {
        list.getEntries().forEach(onEntry);
        if (state.fcp && state.lcp) state.painted.splice(0).forEach((resolve) => resolve());
      });
      observer.observe({ type, buffered: true });
      state.observers.push([observer, onEntry]);
    } catch (e) { /* entry type not supported by this engine */ }
  };
  take('paint', (e) => { if (e.name === 'first-contentful-paint') state.fcp = e.startTime; });
  take('largest-contentful-paint', (e) => { state.lcp = e.renderTime || e.loadTime || e.startTime; });
  take('layout-shift', (e) => { if (!e.hadRecentInput) state.cls += e.value; });
  Object.defineProperty(window, '__smartfleetVitals', { value: state, enumerable: false });
})();"""

_READ_SCRIPT = """async (waitMs) => {
  const state = window.__smartfleetVitals;
  // Entries queued but not yet delivered to the observers' callbacks.
  if (state) state.observers.forEach(([o, onEntry]) => o.takeRecords().forEach(onEntry));
  if (state && !(state.fcp && state.lcp)) {
    // Right after `load` the first frame may not be presented yet: wait a little for it.
    await new Promise((resolve) => { state.painted.push(resolve); setTimeout(resolve, waitMs); });
  }
  const nav = performance.getEntriesByType('navigation')[0];
  const size = (e) => e.transferSize || e.encodedBodySize || 0;
  let bytes = nav ? size(nav) : 0;
  performance.getEntriesByType('resource').forEach((e) => { bytes += size(e); });
  let fcp = state ? state.fcp : 0;
  if (!fcp) {
    const paint = performance.getEntriesByName('first-contentful-paint')[0];
    fcp = paint ? paint.startTime : 0;
  }
  return {
    ttfb: nav ? Math.max(0, nav.responseStart - (nav.activationStart || 0)) : 0,
    fcp,
    lcp: state ? state.lcp : 0,
    cls: state ? state.cls : 0,
    bytes,
  };
}"""


class PageMeter:
    """Records a session's measurements into its Observation; attach before the first navigation."""

    def __init__(self, page: Page, seen: Observation) -> None:
        self._page = page
        self._seen = seen

    async def attach(self) -> None:
        page = self._page
        await page.add_init_script(script=_INIT_SCRIPT)
        page.on("request", self._on_request)
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    async def read(self, *, within: float) -> None:
        """Vitals and bytes of the page's current document; left at 0 when the page cannot tell."""
        page = self._page
        if page.is_closed() or self._seen.page_crashed:
            return
        try:
            wait_ms = min(_PAINT_WAIT.total_seconds(), within / 2) * 1000
            raw = await asyncio.wait_for(page.evaluate(_READ_SCRIPT, wait_ms), within)
        except (PlaywrightError, TimeoutError) as error:
            logger.debug("no page measurements: %s", error)
            return
        if not isinstance(raw, dict):
            return
        self._seen.vitals = WebVitals(
            ttfb_ms=_number(raw, "ttfb"),
            fcp_ms=_number(raw, "fcp"),
            lcp_ms=_number(raw, "lcp"),
            cls=_number(raw, "cls"),
        )
        self._seen.bytes_transferred = int(_number(raw, "bytes"))

    def _on_request(self, _: Request) -> None:
        self._seen.request_count += 1

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self._add_error(message.text)

    def _on_page_error(self, error: PlaywrightError) -> None:
        name = error.name or "Error"
        self._add_error(f"{name}: {error.message}" if error.message else name)

    def _add_error(self, text: str) -> None:
        errors = self._seen.console_errors
        if len(errors) < MAX_CONSOLE_ERRORS:
            errors.append(text[:MAX_CONSOLE_ERROR_CHARS])


def _number(raw: dict[str, Any], key: str) -> float:
    value = raw.get(key)
    return max(0.0, float(value)) if isinstance(value, int | float) else 0.0

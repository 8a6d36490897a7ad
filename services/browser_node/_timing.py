"""Navigation timing of the measured document, read from the page's Performance API."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from services.common.types import NavigationTiming

logger = logging.getLogger(__name__)

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


async def read_timing(page: Page, *, within: float) -> NavigationTiming | None:
    """The timings of the page's current document; None when the page cannot tell (no failure)."""
    try:
        raw = await asyncio.wait_for(page.evaluate(_TIMING_SCRIPT), within)
    except (PlaywrightError, TimeoutError) as error:
        logger.debug("no navigation timing: %s", error)
        return None
    return _timing(raw)


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

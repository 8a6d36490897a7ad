"""Which Chromium a node launches, the switches that keep it quiet on a closed network, and the
gate that spaces launches out."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from services.common.errors import BrowserNotFound

logger = logging.getLogger(__name__)

BrowserSource = Literal["explicit", "playwright", "system"]

# Looked up on PATH, in this order, when neither an explicit path nor Playwright's browser exists.
SYSTEM_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Nodes often run where nothing but the targets is reachable: keep the browser from calling home
# (updates, sync, translation, metrics upload) and from depending on a GPU or a large /dev/shm.
LAUNCH_ARGS: tuple[str, ...] = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--disable-quic",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
)

INSTALL_HINT = (
    "install one with `playwright install chromium` (or `make browser`), or the OS package "
    "(e.g. `apt-get install chromium`), or point SMARTFLEET_BROWSER_PATH at a Chromium executable"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrowserExecutable:
    """What to launch: `path` None means Playwright's own browser (no executable_path)."""

    path: str | None
    source: BrowserSource

    def describe(self) -> str:
        return f"{self.path} ({self.source})" if self.path else "Playwright's bundled Chromium"


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_browser(
    explicit_path: str | None = None,
    *,
    playwright_executable: str | None = None,
    search_path: str | None = None,
) -> BrowserExecutable:
    """Pick the browser: the explicit path, else Playwright's installed one, else Chromium on PATH.

    `playwright_executable` is `playwright.chromium.executable_path` (known only once a driver
    runs); `search_path` overrides $PATH. Raises BrowserNotFound saying how to install one.
    """
    if explicit_path:
        # An operator who names a browser means that one: no silent fallback to another.
        resolved = shutil.which(explicit_path, path=search_path) or explicit_path
        if not _is_executable(resolved):
            raise BrowserNotFound(
                f"SMARTFLEET_BROWSER_PATH={explicit_path!r} is not an executable file; "
                f"fix the path or unset it to use an installed browser ({INSTALL_HINT})"
            )
        return BrowserExecutable(path=os.path.abspath(resolved), source="explicit")
    if playwright_executable and _is_executable(playwright_executable):
        return BrowserExecutable(path=None, source="playwright")
    for name in SYSTEM_BROWSERS:
        found = shutil.which(name, path=search_path)
        if found:
            return BrowserExecutable(path=found, source="system")
    raise BrowserNotFound(
        f"no Chromium found (looked for Playwright's browser and {', '.join(SYSTEM_BROWSERS)} "
        f"on PATH); {INSTALL_HINT}"
    )


class LaunchGate:
    """Spaces the starts of a node's browser launches at least `spacing` apart.

    A launch costs a core for a second or two; a cold start, a burst of account browsers or a
    wave of relaunches would otherwise start them all at once. Each start waits for the previous
    one plus `spacing` and up to `jitter * spacing` more (so nodes started together drift
    apart); the first waits for nothing. Launches themselves may overlap.
    """

    def __init__(self, *, spacing: timedelta, jitter: float = 0.2) -> None:
        self._spacing = max(0.0, spacing.total_seconds())
        self._jitter = max(0.0, jitter)
        self._lock = asyncio.Lock()
        self._next = float("-inf")  # loop time before which no launch starts
        # Recent start times (event loop clock), for logs and tests.
        self.starts: deque[float] = deque(maxlen=64)

    async def turn(self) -> float:
        """Wait until a launch may start; returns the seconds waited."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        async with self._lock:  # one waiter at a time, in arrival order
            delay = self._next - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            self._next = now + self._spacing * (1 + random.uniform(0, self._jitter))
            self.starts.append(now)
        return now - asked

"""The browser node: warm Chromium, pulls job envelopes from JetStream, reports to the scheduler."""

from __future__ import annotations

from services.browser_node._browser import BrowserExecutable, find_browser
from services.browser_node._pool import BrowserPool
from services.browser_node._session import SessionRunner
from services.browser_node.server import BrowserNode, serve

__all__ = [
    "BrowserExecutable",
    "BrowserNode",
    "BrowserPool",
    "SessionRunner",
    "find_browser",
    "serve",
]

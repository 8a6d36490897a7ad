"""The browser node: warm Chromium, pulls job envelopes from JetStream, reports to the scheduler."""

from __future__ import annotations

from services.browser_node._accounts import AccountState, AccountStates
from services.browser_node._artifacts import ArtifactStore
from services.browser_node._browser import BrowserExecutable, find_browser
from services.browser_node._pool import BrowserPool
from services.browser_node._session import SessionRunner
from services.browser_node._steps import StepExecutor
from services.browser_node.server import BrowserNode, serve

__all__ = [
    "AccountState",
    "AccountStates",
    "ArtifactStore",
    "BrowserExecutable",
    "BrowserNode",
    "BrowserPool",
    "SessionRunner",
    "StepExecutor",
    "find_browser",
    "serve",
]

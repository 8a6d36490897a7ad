"""Domain types shared by the scheduler and the browser nodes (no protobuf here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"
    HTTP_ERROR = "http_error"
    NAVIGATION_ERROR = "navigation_error"
    TIMEOUT = "timeout"
    BROWSER_CRASH = "browser_crash"
    BLOCKED_BY_ALLOWLIST = "blocked_by_allowlist"
    ASSERTION_FAILED = "assertion_failed"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal_error"


class ErrorClass(StrEnum):
    NONE = "none"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    ACCOUNT = "account"


class NodeState(StrEnum):
    READY = "ready"
    DRAINING = "draining"
    DRAINED = "drained"
    CORDONED = "cordoned"
    LOST = "lost"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEnvelope:
    """One session attempt as published on the bus."""

    job_id: str
    attempt: int
    run_id: str
    index: int
    target_url: str
    engine: str
    session_timeout: timedelta
    deadline: datetime
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NavigationTiming:
    dns_ms: float = 0.0
    connect_ms: float = 0.0
    ttfb_ms: float = 0.0
    dom_content_loaded_ms: float = 0.0
    load_ms: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionResult:
    """What a node measured for one attempt of one job."""

    job_id: str
    attempt: int
    run_id: str
    index: int
    outcome: Outcome
    error_class: ErrorClass
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    node_id: str = ""
    engine: str = ""
    error: str = ""
    http_status: int = 0
    target_url: str = ""
    final_url: str = ""
    redirect_chain: tuple[str, ...] = ()
    timing: NavigationTiming = field(default_factory=NavigationTiming)
    browser_version: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    node_id: str
    host: str
    engines: tuple[str, ...]
    labels: dict[str, str]
    slots: int
    version: str = ""
    playwright_version: str = ""
    browser_versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeLoad:
    busy_slots: int
    free_slots: int
    cpu_percent: float = 0.0
    rss_bytes: int = 0

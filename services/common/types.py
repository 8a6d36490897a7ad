"""Domain types shared by the scheduler and the browser nodes (no protobuf here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.common.spec import Step


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
    # A job's outcome when no result arrived by its deadline; never a session's.
    LOST = "lost"


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
class Geolocation:
    latitude: float
    longitude: float
    accuracy: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """The matrix cell a session runs in; empty fields mean the node's defaults."""

    device: str = ""
    locale: str = ""
    timezone: str = ""
    geolocation: Geolocation | None = None
    engine: str = "chromium"
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        parts = [self.device or "default device", self.locale or "default locale", self.engine]
        if self.timezone:
            parts.insert(2, self.timezone)
        if self.labels:
            parts.append(",".join(f"{k}={v}" for k, v in self.labels))
        return " / ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutcome:
    index: int
    action: str
    status: str  # "ok", "skipped", "failed"
    duration_ms: float = 0.0
    error: str = ""


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
    steps: tuple[Step, ...] = ()
    cell: Cell = field(default_factory=Cell)
    account: str = ""
    write_back_state: bool = False
    artifacts: str = "never"
    seed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NavigationTiming:
    dns_ms: float = 0.0
    connect_ms: float = 0.0
    ttfb_ms: float = 0.0
    dom_content_loaded_ms: float = 0.0
    load_ms: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WebVitals:
    """Web Vitals of the session's last document; 0 means the page did not report one."""

    ttfb_ms: float = 0.0
    fcp_ms: float = 0.0
    lcp_ms: float = 0.0
    cls: float = 0.0


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
    cell: Cell = field(default_factory=Cell)
    extracted: dict[str, Any] = field(default_factory=dict)
    steps: tuple[StepOutcome, ...] = ()
    account: str = ""
    artifacts: tuple[str, ...] = ()
    vitals: WebVitals = field(default_factory=WebVitals)
    bytes_transferred: int = 0
    request_count: int = 0
    console_errors: tuple[str, ...] = ()
    # When the scheduler stored it (None until it is stored).
    stored_at: datetime | None = None

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
    # CPU of the node's own processes (percent of one core) and the host's load average.
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    host_load_1m: float = 0.0

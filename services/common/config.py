"""Settings of each service, from flags or `SMARTFLEET_*` environment variables."""

from __future__ import annotations

import socket
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.durations import parse_duration


def _coerce_duration(value: Any) -> Any:
    if isinstance(value, str) and value.strip() and not value.strip().replace(".", "").isdigit():
        return parse_duration(value)
    return value


Duration = Annotated[timedelta, BeforeValidator(_coerce_duration)]


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMARTFLEET_", extra="ignore")

    log_level: str = "INFO"
    log_json: bool = True
    # When set, the service writes its bound addresses here (JSON) once it serves.
    ready_file: str | None = None


class SchedulerSettings(_Base):
    scheduler_listen: str = "127.0.0.1:50052"
    database_url: str = "sqlite+aiosqlite:///smartfleet.db"
    # Upgrade the database schema to this version's at start (`smartctl up` does). Off, the
    # scheduler refuses a database not at it and names the command: `smartctl db upgrade`.
    database_upgrade: bool = False
    nats_url: str = "nats://127.0.0.1:4222"
    # Copies of the job stream (and its consumers) kept by the NATS cluster: 1 for the embedded
    # server, 3 on a cluster of three or more (checked at start against the cluster's size).
    nats_replicas: int = Field(default=1, ge=1, le=5)
    # The address gateways and nodes are told to use for this scheduler when it leads (a
    # standby names the leader's when it refuses a write); unset: the bound address, with the
    # host name for 0.0.0.0. Give the same form as in their --scheduler-addr lists.
    scheduler_advertise: str | None = None
    # On PostgreSQL the schedulers of one database elect a leader with a lease this long: a
    # standby takes over within about this much (plus 1/5 of it) after the leader dies.
    leader_lease: Duration = timedelta(seconds=5)
    # Hosts targets may name besides loopback (comma-separated; `*.example.com` allowed).
    allowed_hosts: str = ""
    ack_wait: Duration = timedelta(seconds=30)
    # The job stream drops a re-publish of the same (job, attempt) inside this window. At start
    # the scheduler publishes every job still out again (a crash may have claimed jobs it never
    # published): a restart within the window sends each exactly once.
    nats_duplicate_window: Duration = timedelta(minutes=5)
    heartbeat_interval: Duration = timedelta(seconds=2)
    node_lost_after: Duration = timedelta(seconds=10)
    # Dispatch ticks start at least this far apart (a paced job leaves at most this late), so
    # a busy run makes one claim and one publish round per interval, not one per job.
    dispatch_interval: Duration = timedelta(milliseconds=5)
    default_session_timeout: Duration = timedelta(seconds=60)
    # Extra time past a job's session timeout before the scheduler re-dispatches it.
    recovery_grace: Duration = timedelta(seconds=60)
    # Fernet key(s) encrypting account storage state (comma-separated: the first encrypts, all
    # decrypt). Unset: a key file next to a SQLite database; PostgreSQL then stores no state.
    secret_key: str | None = Field(default=None, repr=False)
    # The artifact store (screenshots, traces, HARs nodes upload); unset: `artifacts` next to a
    # SQLite database, else <temp dir>/smartfleet-artifact-store. Kept for `artifact_retention`
    # and at most `artifact_max_mb` in all (the oldest go first).
    artifact_dir: str | None = None
    artifact_retention: Duration = timedelta(days=7)
    artifact_max_mb: int = Field(default=5120, ge=1)
    artifact_max_upload_mb: int = Field(default=512, ge=1)

    @property
    def artifact_root(self) -> Path:
        if self.artifact_dir and self.artifact_dir.strip():
            return Path(self.artifact_dir.strip())
        from sqlalchemy.engine import make_url  # only the scheduler needs it

        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database).resolve().parent / "artifacts"
        return Path(tempfile.gettempdir()) / "smartfleet-artifact-store"

    @property
    def allowed_host_list(self) -> list[str]:
        return _split(self.allowed_hosts)

    @property
    def nats_servers(self) -> list[str]:
        return _split(self.nats_url)


# The scheduler refuses nodes with more (a node serves every subset: 2**4 pools per engine).
MAX_NODE_LABELS = 4


class NodeSettings(_Base):
    node_id: str = Field(default_factory=lambda: socket.gethostname())
    node_host: str = Field(default_factory=lambda: socket.gethostname())
    # 0 sizes the slots from the host: min(1.5 per CPU, one per 350 MB of memory), cgroup limits
    # (v2 or v1) included.
    node_slots: int = 0
    # Placement labels `k=v,k2=v2` (at most 4): the node also serves each engine's labelled pools.
    node_labels: str = ""
    node_listen: str = "127.0.0.1:0"
    # Every scheduler's HOST:PORT, comma-separated: the node follows whichever leads.
    scheduler_addr: str = "127.0.0.1:50052"
    nats_url: str = "nats://127.0.0.1:4222"
    # The engine the node serves. `noop` is for benchmarks only (completes each job at once,
    # without a browser, to measure orchestration); it must be chosen explicitly, never a default.
    node_engine: Literal["chromium", "noop"] = "chromium"
    # An explicit browser executable; otherwise Playwright's own browser or a system Chromium.
    browser_path: str | None = None
    headless: bool = True
    # Results leave in one call at a time, calls at least `report_linger` apart (a result after
    # a quiet spell goes at once); what finishes meanwhile rides along, at most this many.
    report_batch_size: int = Field(default=256, ge=1, le=1000)
    report_linger: Duration = timedelta(milliseconds=5)
    shutdown_grace: Duration = timedelta(seconds=20)
    # Where session artifacts wait for their upload; unset: <temp dir>/smartfleet-artifacts.
    artifact_dir: str | None = None
    # Browsers kept open for accounts (least recently used closes first), and their idle timeout.
    account_browsers: int = Field(default=8, ge=1)
    account_browser_idle: Duration = timedelta(minutes=5)
    # A browser is recycled after this many sessions, or once its own processes (pages' renderers
    # aside) use more than this many MB (PSS); 0 turns either off.
    browser_recycle_after: int = Field(default=500, ge=0)
    browser_recycle_above_mb: int = Field(default=1024, ge=0)
    # The least time between the starts of two browser launches (so a cold start is staggered).
    browser_launch_spacing: Duration = timedelta(milliseconds=500)
    # Egress proxy for the sessions of no account (`http://user:pass@host:port`, https, socks5);
    # accounts keep their own proxy.
    node_proxy: str | None = None

    @field_validator("node_proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value if "://" in value else f"http://{value}")
        try:
            parts.port  # noqa: B018 -- raises on a malformed port
        except ValueError:
            raise ValueError("the node proxy has a malformed port") from None
        if parts.scheme not in ("http", "https", "socks5") or not parts.hostname:
            raise ValueError("the node proxy is a URL like http://host:port (http, https, socks5)")
        return value

    @field_validator("node_labels")
    @classmethod
    def _check_labels(cls, value: str) -> str:
        items = _split(value)
        if any("=" not in item or not item.split("=", 1)[0].strip() for item in items):
            raise ValueError("node labels are `key=value` pairs separated by commas")
        if len(items) > MAX_NODE_LABELS:
            raise ValueError(f"at most {MAX_NODE_LABELS} node labels")
        return value

    @property
    def scheduler_addrs(self) -> list[str]:
        return list(dict.fromkeys(_split(self.scheduler_addr)))

    @property
    def labels(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in _split(self.node_labels))
        return {key.strip(): value.strip() for key, value in pairs}

    @property
    def nats_servers(self) -> list[str]:
        return _split(self.nats_url)

    @property
    def effective_slots(self) -> int:
        """The operator's slots, or (0) sized from the host's CPUs and memory, cgroups included."""
        if self.node_slots > 0:
            return self.node_slots
        # Imported here: sizing reads the host, which only a node needs.
        from services.browser_node._host import default_slots

        return default_slots()


class GatewaySettings(_Base):
    gateway_listen: str = "127.0.0.1:50051"
    # Every scheduler's HOST:PORT, comma-separated: writes go to whichever leads.
    scheduler_addr: str = "127.0.0.1:50052"
    # Comma-separated bearer tokens, or hashes written `sha256:<hex>`.
    gateway_tokens: str = ""
    gateway_token_file: str | None = None
    # GetRun answers may be this much behind the scheduler (0 turns the gateway's run snapshot
    # cache off); final runs are kept until evicted, at most `gateway_run_cache_size` runs.
    gateway_run_staleness: Duration = timedelta(milliseconds=250)
    gateway_run_cache_size: int = Field(default=2048, ge=1)

    @property
    def scheduler_addrs(self) -> list[str]:
        return list(dict.fromkeys(_split(self.scheduler_addr)))

    @property
    def token_list(self) -> list[str]:
        tokens = _split(self.gateway_tokens)
        if self.gateway_token_file:
            with open(self.gateway_token_file, encoding="utf-8") as handle:
                tokens += [
                    line.strip() for line in handle if line.strip() and not line.startswith("#")
                ]
        return tokens

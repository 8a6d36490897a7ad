"""Database tables (SQLAlchemy 2). Portable SQL only; dialect specifics live in _db.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("request_id", name="uq_runs_request_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]]
    planned: Mapped[int] = mapped_column(BigInteger)
    # Jobs are created at dispatch: the next index to create is the run's cursor.
    next_index: Mapped[int] = mapped_column(BigInteger, default=0)
    dispatched: Mapped[int] = mapped_column(BigInteger, default=0)
    succeeded: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)
    retrying: Mapped[int] = mapped_column(BigInteger, default=0)
    in_flight: Mapped[int] = mapped_column(BigInteger, default=0)
    dead: Mapped[int] = mapped_column(BigInteger, default=0)
    cancelled: Mapped[int] = mapped_column(BigInteger, default=0)
    # Set when an operator starts every remaining session now, regardless of the plan.
    expedited_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The caller's labels (None: none), the client's idempotency key of the CreateRun that made
    # it (AIP-155), and the name of the token that did.
    labels: Mapped[dict[str, Any] | None]
    request_id: Mapped[str | None] = mapped_column(String(128))
    created_by: Mapped[str | None] = mapped_column(String(128))


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("run_id", "index", name="uq_jobs_run_index"),
        Index("ix_jobs_status_deadline", "status", "deadline"),
        Index("ix_jobs_status_retry_at", "status", "retry_at"),
        Index("ix_jobs_run_status", "run_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))
    index: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))
    pool: Mapped[str] = mapped_column(String(64))
    target_url: Mapped[str] = mapped_column(String(2048))
    cell: Mapped[dict[str, Any]]
    account: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(String(2000))
    dispatched_at: Mapped[datetime]
    deadline: Mapped[datetime]
    retry_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ResultRow(Base):
    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("job_id", "attempt", name="uq_results_job_attempt"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    index: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(32))
    error_class: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[float] = mapped_column(Float)
    node_id: Mapped[str] = mapped_column(String(128))
    engine: Mapped[str] = mapped_column(String(16))
    cell_key: Mapped[str] = mapped_column(String(300), default="")
    account: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    # When the scheduler stored it (in the storing transaction): pipeline latency is measured to it.
    stored_at: Mapped[datetime | None]
    # Everything else a node measured (error, URLs, redirect chain, timings, versions).
    detail: Mapped[dict[str, Any]]


class NodeRow(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    info: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    slots: Mapped[int] = mapped_column(Integer)
    busy_slots: Mapped[int] = mapped_column(Integer, default=0)
    free_slots: Mapped[int] = mapped_column(Integer, default=0)
    cpu_percent: Mapped[float] = mapped_column(Float, default=0.0)
    rss_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    registered_at: Mapped[datetime]
    last_heartbeat: Mapped[datetime]


class AccountRow(Base):
    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    labels: Mapped[dict[str, Any]]
    # The proxy as the API shows it: a password is masked ("http://user:***@host:3128").
    proxy: Mapped[str] = mapped_column(String(2048), default="")
    # A proxy URL with a password, whole, as a Fernet token (what nodes get); else None.
    proxy_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    sessions_per_hour: Mapped[int] = mapped_column(Integer, default=0)
    cooldown_s: Mapped[float] = mapped_column(Float)
    # "active" or "disabled"; "cooling" is derived from cooldown_until.
    status: Mapped[str] = mapped_column(String(16))
    cooldown_until: Mapped[datetime | None]
    # A Fernet token of the Playwright storage state; never plaintext.
    storage_state: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Round-robin: the matching account with the lowest turn (least recently assigned) goes next.
    last_turn: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AccountUseRow(Base):
    """One session assigned to an account; the last hour of these enforces sessions_per_hour."""

    __tablename__ = "account_uses"
    __table_args__ = (Index("ix_account_uses_account_used_at", "account", "used_at"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(128))
    used_at: Mapped[datetime] = mapped_column(index=True)


class ScheduleRow(Base):
    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    template: Mapped[dict[str, Any]]
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    next_fire_at: Mapped[datetime | None] = mapped_column(index=True)
    last_fire_at: Mapped[datetime | None]
    last_run_id: Mapped[str] = mapped_column(String(32), default="")
    runs_created: Mapped[int] = mapped_column(BigInteger, default=0)
    # A claimed tick whose run may not exist yet (set before the run is created, cleared after):
    # the tick being fired and when it was claimed, so a restart finishes it exactly once.
    firing_tick: Mapped[datetime | None]
    firing_since: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LeaseRow(Base):
    """Who leads the schedulers of one PostgreSQL database (one row, `name = "leader"`).

    `token` grows by one at every change of holder: it fences the writes of a deposed leader.
    `expires_at` is in the database's clock, so the schedulers' own clocks never matter.
    """

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), default="")
    # Where the holder serves (what clients are told when a standby refuses a write).
    address: Mapped[str] = mapped_column(String(300), default="")
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime]
    acquired_at: Mapped[datetime]

"""Baseline: the schema as `Base.metadata.create_all` made it before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-12-02

The tables are stated as data (SCHEMA) rather than as a list of operations, so that
services/scheduler/_migrate.py can compare a database made before migrations with it and adopt
that database (stamp this revision) instead of creating the tables anew.

Types are spelled as the DDL they produce and do not import the application's models (a revision
must keep meaning what it meant when the models change): the models' UTCDateTime is
`DateTime(timezone=True)` in the database (its UTC conversion happens in Python), and their
`dict`/`list` columns are `JSON`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _count(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.BigInteger(), nullable=False)


SCHEMA = sa.MetaData()

sa.Table(
    "runs",
    SCHEMA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("spec", sa.JSON(), nullable=False),
    _count("planned"),
    _count("next_index"),
    _count("dispatched"),
    _count("succeeded"),
    _count("failed"),
    _count("retrying"),
    _count("in_flight"),
    _count("dead"),
    _count("cancelled"),
    _time("expedited_at", nullable=True),
    _time("created_at"),
    _time("started_at", nullable=True),
    _time("finished_at", nullable=True),
    sa.Index("ix_runs_status", "status"),
)

sa.Table(
    "jobs",
    SCHEMA,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("index", sa.BigInteger(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("pool", sa.String(64), nullable=False),
    sa.Column("target_url", sa.String(2048), nullable=False),
    sa.Column("cell", sa.JSON(), nullable=False),
    sa.Column("account", sa.String(128), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("error", sa.String(2000), nullable=True),
    _time("dispatched_at"),
    _time("deadline"),
    _time("retry_at", nullable=True),
    _time("finished_at", nullable=True),
    sa.UniqueConstraint("run_id", "index", name="uq_jobs_run_index"),
    sa.Index("ix_jobs_status_deadline", "status", "deadline"),
    sa.Index("ix_jobs_status_retry_at", "status", "retry_at"),
    sa.Index("ix_jobs_run_status", "run_id", "status"),
)

sa.Table(
    "results",
    SCHEMA,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("index", sa.BigInteger(), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("error_class", sa.String(16), nullable=False),
    sa.Column("http_status", sa.Integer(), nullable=False),
    sa.Column("duration_ms", sa.Float(), nullable=False),
    sa.Column("node_id", sa.String(128), nullable=False),
    sa.Column("engine", sa.String(16), nullable=False),
    sa.Column("cell_key", sa.String(300), nullable=False),
    sa.Column("account", sa.String(128), nullable=True),
    _time("started_at"),
    _time("finished_at"),
    _time("stored_at", nullable=True),
    sa.Column("detail", sa.JSON(), nullable=False),
    sa.UniqueConstraint("job_id", "attempt", name="uq_results_job_attempt"),
    sa.Index("ix_results_run_id", "run_id"),
)

sa.Table(
    "nodes",
    SCHEMA,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("info", sa.JSON(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("slots", sa.Integer(), nullable=False),
    sa.Column("busy_slots", sa.Integer(), nullable=False),
    sa.Column("free_slots", sa.Integer(), nullable=False),
    sa.Column("cpu_percent", sa.Float(), nullable=False),
    sa.Column("rss_bytes", sa.BigInteger(), nullable=False),
    _time("registered_at"),
    _time("last_heartbeat"),
)

sa.Table(
    "accounts",
    SCHEMA,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("labels", sa.JSON(), nullable=False),
    sa.Column("proxy", sa.String(2048), nullable=False),
    sa.Column("proxy_sealed", sa.LargeBinary(), nullable=True),
    sa.Column("sessions_per_hour", sa.Integer(), nullable=False),
    sa.Column("cooldown_s", sa.Float(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    _time("cooldown_until", nullable=True),
    sa.Column("storage_state", sa.LargeBinary(), nullable=True),
    sa.Column("last_turn", sa.BigInteger(), nullable=False),
    _time("created_at"),
    _time("updated_at"),
)

sa.Table(
    "account_uses",
    SCHEMA,
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("account", sa.String(128), nullable=False),
    _time("used_at"),
    sa.Index("ix_account_uses_account_used_at", "account", "used_at"),
    sa.Index("ix_account_uses_used_at", "used_at"),
)

sa.Table(
    "schedules",
    SCHEMA,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("template", sa.JSON(), nullable=False),
    sa.Column("paused", sa.Boolean(), nullable=False),
    _time("next_fire_at", nullable=True),
    _time("last_fire_at", nullable=True),
    sa.Column("last_run_id", sa.String(32), nullable=False),
    _count("runs_created"),
    _time("firing_tick", nullable=True),
    _time("firing_since", nullable=True),
    _time("created_at"),
    _time("updated_at"),
    sa.Index("ix_schedules_next_fire_at", "next_fire_at"),
)


def upgrade() -> None:
    # DDL elements rather than create_all: they also render in offline (`--sql`) mode.
    for table in SCHEMA.sorted_tables:
        op.execute(CreateTable(table))
        for index in sorted(table.indexes, key=lambda index: str(index.name)):
            op.execute(CreateIndex(index))


def downgrade() -> None:
    for table in reversed(SCHEMA.sorted_tables):
        op.execute(DropTable(table))

"""The columns and field lists of runs, jobs, nodes, hosts and run statistics.

Priorities say what an 80-column terminal keeps: 0 always (ids, state), then 1, 2, …; columns
marked wide only show with `-o wide` (and are always in CSV).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cli._data import enum_field_text, enum_text
from cli._output import Column
from cli._text import (
    age_text,
    metric_text,
    ms_text,
    short_time_text,
    timestamp_text,
    timestamp_value,
)
from services.common.durations import format_duration
from smartfleet.v1 import common_pb2, nodes_pb2, results_pb2, runs_pb2

STATUS_STYLE = {
    "draft": "dim",
    "running": "cyan",
    "paused": "yellow",
    "completed": "green",
    "cancelled": "yellow",
    "failed": "red",
    "ready": "green",
    "draining": "yellow",
    "drained": "yellow",
    "cordoned": "yellow",
    "lost": "red",
    "succeeded": "green",
    "dead": "red",
    "retry_wait": "yellow",
    "ok": "green",
}


def status_style(status: str) -> str | None:
    return STATUS_STYLE.get(status)


def styled(status: str) -> str:
    """Rich markup for a status word (progress bars and summaries, not tables)."""
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def run_status(run: runs_pb2.Run) -> str:
    return enum_field_text(run, "status")


def node_state(node: nodes_pb2.Node) -> str:
    return enum_field_text(node, "state")


def outcome_text(result: results_pb2.SessionResult) -> str:
    return enum_field_text(result, "outcome")


def outcome_style(name: str) -> str:
    return "green" if name == "ok" else "red"


def run_duration_text(run: runs_pb2.Run) -> str:
    if not run.HasField("started_at") or run.started_at.seconds == 0:
        return "-"
    start = run.started_at.ToDatetime(tzinfo=UTC)
    end = (
        run.finished_at.ToDatetime(tzinfo=UTC)
        if run.HasField("finished_at") and run.finished_at.seconds
        else datetime.now(UTC)
    )
    return f"{(end - start).total_seconds():.1f}s"


def _count(getter: Any, header: str, priority: int, *, wide: bool = False) -> Column[Any]:
    return Column(
        header=header,
        text=lambda item: str(getter(item)),
        value=getter,
        priority=priority,
        wide=wide,
        right=True,
    )


RUN_COLUMNS: list[Column[runs_pb2.Run]] = [
    Column(header="RUN", text=lambda run: run.id),
    Column(header="NAME", text=lambda run: run.name or "-", wrap=10, priority=2),
    Column(header="STATUS", text=run_status, style=lambda run: status_style(run_status(run))),
    _count(lambda run: run.counters.planned, "PLANNED", 3),
    _count(lambda run: run.counters.succeeded, "OK", 1),
    _count(lambda run: run.counters.failed, "FAILED", 1),
    _count(lambda run: run.counters.retrying, "RETRYING", 6),
    _count(lambda run: run.counters.in_flight, "IN FLIGHT", 5),
    _count(lambda run: run.counters.dead, "DEAD", 6, wide=True),
    Column(
        header="CREATED",
        text=lambda run: short_time_text(run.created_at),
        value=lambda run: timestamp_value(run.created_at),
        priority=4,
    ),
    Column(
        header="STARTED",
        text=lambda run: timestamp_text(run.started_at),
        value=lambda run: timestamp_value(run.started_at),
        wide=True,
    ),
    Column(header="DURATION", text=run_duration_text, wide=True),
    Column(header="TARGETS", text=lambda run: " ".join(run.spec.targets), wrap=20, wide=True),
]


def run_fields(run: runs_pb2.Run) -> list[tuple[str, str] | tuple[str, str, str | None]]:
    spec, counters = run.spec, run.counters
    timeout = (
        format_duration(spec.limits.session_timeout.ToTimedelta())
        if spec.limits.HasField("session_timeout")
        else "server default"
    )
    status = run_status(run)
    return [
        ("run", run.id),
        ("name", run.name or "-"),
        ("status", status, status_style(status)),
        ("targets", "\n".join(spec.targets) or "-"),
        ("sessions", str(spec.sessions)),
        ("engine", enum_field_text(spec, "engine") if spec.engine else "chromium"),
        ("pacing", enum_field_text(spec.pacing, "mode") if spec.pacing.mode else "fast"),
        ("concurrency", str(spec.limits.max_concurrency or "fleet capacity")),
        ("session timeout", timeout),
        (
            "progress",
            f"{counters.succeeded + counters.failed}/{counters.planned} final: "
            f"{counters.succeeded} ok, {counters.failed} failed, {counters.retrying} retrying, "
            f"{counters.in_flight} in flight, {counters.dead} dead",
        ),
        ("created", timestamp_text(run.created_at)),
        ("started", timestamp_text(run.started_at)),
        ("finished", timestamp_text(run.finished_at)),
        ("duration", run_duration_text(run)),
    ]


def _labels(node: nodes_pb2.Node) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(node.info.labels.items())) or "-"


def _browsers(node: nodes_pb2.Node) -> str:
    versions = sorted(node.info.browser_versions.items())
    return ", ".join(f"{engine} {version}" for engine, version in versions) or "-"


def node_columns(*, now: datetime | None = None) -> list[Column[nodes_pb2.Node]]:
    return [
        Column(header="NODE", text=lambda node: node.info.node_id),
        Column(header="STATE", text=node_state, style=lambda node: status_style(node_state(node))),
        _count(lambda node: node.info.slots, "SLOTS", 1),
        _count(lambda node: node.load.busy_slots, "BUSY", 1),
        _count(lambda node: node.load.free_slots, "FREE", 5),
        Column(
            header="ENGINES",
            text=lambda node: (
                ",".join(enum_text(common_pb2.Engine.DESCRIPTOR, e) for e in node.info.engines)
                or "-"
            ),
            wrap=8,
            priority=4,
        ),
        Column(header="LABELS", text=_labels, wrap=12, priority=3),
        Column(
            header="HEARTBEAT",
            text=lambda node: age_text(node.last_heartbeat, now=now),
            value=lambda node: timestamp_value(node.last_heartbeat),
            priority=2,
        ),
        Column(header="HOST", text=lambda node: node.info.host or "-", priority=7),
        Column(header="VERSION", text=lambda node: node.info.version or "-", priority=6),
        Column(
            header="PLAYWRIGHT",
            text=lambda node: node.info.playwright_version or "-",
            priority=8,
        ),
        Column(header="BROWSER", text=_browsers, wrap=12, priority=8),
        Column(
            header="RSS",
            text=lambda node: metric_text("bytes", node.load.rss_bytes),
            value=lambda node: node.load.rss_bytes,
            wide=True,
            right=True,
        ),
    ]


JOB_COLUMNS: list[Column[runs_pb2.Job]] = [
    Column(header="JOB", text=lambda job: job.id),
    Column(
        header="STATUS",
        text=lambda job: enum_field_text(job, "status"),
        style=lambda job: status_style(enum_field_text(job, "status")),
    ),
    _count(lambda job: job.attempt, "TRY", 4),
    Column(
        header="OUTCOME",
        text=lambda job: enum_field_text(job, "outcome") if job.outcome else "-",
        style=lambda job: outcome_style(enum_field_text(job, "outcome")) if job.outcome else None,
        priority=1,
    ),
    Column(header="ERROR", text=lambda job: job.error or "-", wrap=20, priority=2),
    Column(
        header="RETRY AT",
        text=lambda job: short_time_text(job.retry_at) if job.HasField("retry_at") else "-",
        value=lambda job: timestamp_value(job.retry_at),
        priority=3,
    ),
    Column(header="CELL", text=lambda job: job.cell.key or "-", wrap=12, priority=5),
    Column(header="TARGET", text=lambda job: job.target_url or "-", wrap=20, wide=True),
]

HOST_COLUMNS: list[Column[nodes_pb2.HostBackoff]] = [
    Column(header="HOST", text=lambda host: host.host),
    _count(lambda host: host.consecutive_errors, "ERRORS IN A ROW", 1),
    Column(
        header="BACKING OFF UNTIL",
        text=lambda host: short_time_text(host.until) if host.HasField("until") else "-",
        value=lambda host: timestamp_value(host.until),
        priority=1,
    ),
]


# -- run statistics (the watch summary) -----------------------------------------------------------


def outcome_rows(stats: runs_pb2.RunStats) -> list[tuple[str, int, str]]:
    """(outcome, count, share) sorted by count; the outcome as every output spells it."""
    total = stats.results or sum(item.count for item in stats.outcomes)
    rows = []
    for item in sorted(stats.outcomes, key=lambda item: -item.count):
        share = f"{100 * item.count / total:.1f}%" if total else "-"
        rows.append((enum_field_text(item, "outcome"), item.count, share))
    return rows


def outcome_spelling(value: common_pb2.Outcome.ValueType) -> str:
    return enum_text(common_pb2.Outcome.DESCRIPTOR, value)


OUTCOME_COLUMNS: list[Column[tuple[str, int, str]]] = [
    Column(header="OUTCOME", text=lambda row: row[0], style=lambda row: outcome_style(row[0])),
    Column(header="COUNT", text=lambda row: str(row[1]), value=lambda row: row[1], right=True),
    Column(header="SHARE", text=lambda row: row[2], right=True),
]


def _percentile(name: str) -> Column[runs_pb2.MetricStats]:
    def text(metric: runs_pb2.MetricStats) -> str:
        return metric_text(metric.name, getattr(metric, name))

    return Column(header=name.upper(), text=text, right=True)


METRIC_COLUMNS: list[Column[runs_pb2.MetricStats]] = [
    Column(header="METRIC", text=lambda metric: metric.name),
    *(_percentile(name) for name in ("p50", "p95", "p99")),
    _count(lambda metric: metric.count, "N", 1),
]

CELL_COLUMNS: list[Column[runs_pb2.CellStats]] = [
    Column(header="CELL", text=lambda cell: cell.cell or "default", wrap=16),
    _count(lambda cell: cell.results, "RESULTS", 0),
    Column(header="OK", text=lambda cell: f"{100 * cell.success_rate:.1f}%", right=True),
    Column(header="P50", text=lambda cell: ms_text(cell.duration_p50_ms), right=True, priority=1),
    Column(header="P95", text=lambda cell: ms_text(cell.duration_p95_ms), right=True, priority=1),
]


def stats_summary(stats: runs_pb2.RunStats) -> str:
    return (
        f"results {stats.results}   success rate {100 * stats.success_rate:.1f}%   "
        f"duration p50 {ms_text(stats.duration_p50_ms)}  p95 {ms_text(stats.duration_p95_ms)}  "
        f"max {ms_text(stats.duration_max_ms)}"
    )

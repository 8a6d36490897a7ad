"""Rendering of Fleet API messages: rich tables for people, JSON (MessageToDict) for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

from services.common.contracts import engine_name, from_proto_json, spelling
from smartfleet.v1 import common_pb2, nodes_pb2, runs_pb2

console = Console(highlight=False)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


def message_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data: proto field names, zero values included, enum values
    spelled as everywhere else (`assertion_failed`)."""
    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return dict(from_proto_json(data, cast(Descriptor, message.DESCRIPTOR)))


def print_json(data: Any) -> None:
    """JSON on stdout, plain (no rich markup or wrapping), so it pipes into jq."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def run_status(run: runs_pb2.Run) -> str:
    return spelling(runs_pb2.RunStatus.DESCRIPTOR, run.status) or "unspecified"


def node_state(node: nodes_pb2.Node) -> str:
    return spelling(nodes_pb2.NodeState.DESCRIPTOR, node.state) or "unspecified"


def outcome_name(outcome: int) -> str:
    return spelling(common_pb2.Outcome.DESCRIPTOR, outcome)


def job_status(job: runs_pb2.Job) -> str:
    return spelling(runs_pb2.JobStatus.DESCRIPTOR, job.status)


_STATUS_STYLE = {
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
}


def styled(status: str) -> str:
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def timestamp_text(value: Timestamp) -> str:
    if value.seconds == 0 and value.nanos == 0:
        return "-"
    return value.ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def short_time_text(value: Timestamp) -> str:
    if value.seconds == 0 and value.nanos == 0:
        return "-"
    local = value.ToDatetime(tzinfo=UTC).astimezone()
    same_day = local.date() == datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if same_day else "%m-%d %H:%M")


def age_text(value: Timestamp, *, now: datetime | None = None) -> str:
    if value.seconds == 0 and value.nanos == 0:
        return "-"
    seconds = ((now or datetime.now(UTC)) - value.ToDatetime(tzinfo=UTC)).total_seconds()
    if seconds < 120:
        return f"{max(seconds, 0):.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


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


def ms_text(value: float) -> str:
    return f"{value / 1000:.2f}s" if value >= 10_000 else f"{value:.0f}ms"


def runs_table(runs: Sequence[runs_pb2.Run]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("RUN", no_wrap=True)
    table.add_column("NAME")
    table.add_column("STATUS", no_wrap=True)
    for column in ("PLANNED", "OK", "FAILED", "RETRYING", "IN FLIGHT"):
        table.add_column(column, justify="right")
    table.add_column("CREATED", no_wrap=True)
    for run in runs:
        counters = run.counters
        table.add_row(
            run.id,
            run.name or "-",
            styled(run_status(run)),
            str(counters.planned),
            str(counters.succeeded),
            str(counters.failed),
            str(counters.retrying),
            str(counters.in_flight),
            short_time_text(run.created_at),
        )
    return table


def run_table(run: runs_pb2.Run) -> Table:
    """One run as a two-column table of its fields."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    spec, counters = run.spec, run.counters
    rows = [
        ("run", run.id),
        ("name", run.name or "-"),
        ("status", styled(run_status(run))),
        ("targets", "\n".join(spec.targets) or "-"),
        ("sessions", str(spec.sessions)),
        ("engine", engine_name(spec.engine) or "chromium"),
        ("concurrency", str(spec.limits.max_concurrency or "fleet capacity")),
        (
            "session timeout",
            f"{spec.limits.session_timeout.ToTimedelta().total_seconds():g}s"
            if spec.limits.HasField("session_timeout")
            else "server default",
        ),
        (
            "progress",
            f"{counters.succeeded + counters.failed}/{counters.planned} final: "
            f"{counters.succeeded} ok, {counters.failed} failed, {counters.retrying} retrying, "
            f"{counters.in_flight} in flight",
        ),
        ("created", timestamp_text(run.created_at)),
        ("started", timestamp_text(run.started_at)),
        ("finished", timestamp_text(run.finished_at)),
        ("duration", run_duration_text(run)),
        *([("waiting", run.waiting_reason)] if run.waiting_reason else []),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def stats_table(stats: runs_pb2.RunStats) -> Table:
    """Counts by outcome with their share, then success rate and duration percentiles."""
    table = Table(box=None, pad_edge=False, header_style="bold", show_footer=False)
    table.add_column("OUTCOME")
    table.add_column("COUNT", justify="right")
    table.add_column("SHARE", justify="right")
    total = stats.results or sum(item.count for item in stats.outcomes)
    for item in sorted(stats.outcomes, key=lambda item: -item.count):
        name = outcome_name(item.outcome)
        share = f"{100 * item.count / total:.1f}%" if total else "-"
        table.add_row(
            f"[green]{name}[/]" if name == "ok" else f"[red]{name}[/]", str(item.count), share
        )
    return table


def stats_summary(stats: runs_pb2.RunStats) -> str:
    return (
        f"results {stats.results}   success rate {100 * stats.success_rate:.1f}%   "
        f"duration p50 {ms_text(stats.duration_p50_ms)}  p95 {ms_text(stats.duration_p95_ms)}  "
        f"max {ms_text(stats.duration_max_ms)}"
    )


def metric_text(name: str, value: float) -> str:
    """A measurement as people read it: durations in ms/s, CLS unitless, bytes in KB/MB."""
    if name.endswith("_ms"):
        return ms_text(value)
    if name == "cls":
        return f"{value:.3f}"
    if name == "bytes":
        for unit, size in (("MB", 1_000_000), ("KB", 1_000)):
            if value >= size:
                return f"{value / size:.1f} {unit}"
        return f"{value:.0f} B"
    return f"{value:.0f}"


def metrics_table(stats: runs_pb2.RunStats) -> Table:
    """Percentiles of the session measurements (Web Vitals, load, bytes, requests)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("METRIC")
    for column in ("P50", "P95", "P99", "N"):
        table.add_column(column, justify="right")
    for metric in stats.metrics:
        table.add_row(
            metric.name,
            metric_text(metric.name, metric.p50),
            metric_text(metric.name, metric.p95),
            metric_text(metric.name, metric.p99),
            str(metric.count),
        )
    return table


def nodes_table(nodes: Sequence[nodes_pb2.Node], *, now: datetime | None = None) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("NODE", no_wrap=True)
    table.add_column("HOST")
    table.add_column("STATE", no_wrap=True)
    for column in ("SLOTS", "BUSY", "FREE"):
        table.add_column(column, justify="right")
    for column in ("ENGINES", "LABELS", "VERSION", "PLAYWRIGHT", "BROWSER"):
        table.add_column(column)
    table.add_column("HEARTBEAT", no_wrap=True)
    for node in nodes:
        info, load = node.info, node.load
        labels = ",".join(f"{key}={value}" for key, value in sorted(info.labels.items()))
        browsers = ", ".join(
            f"{engine} {version}" for engine, version in sorted(info.browser_versions.items())
        )
        table.add_row(
            info.node_id,
            info.host or "-",
            styled(node_state(node)),
            str(info.slots),
            str(load.busy_slots),
            str(load.free_slots),
            ",".join(engine_name(engine) for engine in info.engines) or "-",
            labels or "-",
            info.version or "-",
            info.playwright_version or "-",
            browsers or "-",
            age_text(node.last_heartbeat, now=now),
        )
    return table


def cells_table(stats: runs_pb2.RunStats) -> Table:
    """Run statistics broken down by matrix cell."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (
        ("CELL", "left"),
        ("RESULTS", "right"),
        ("OK", "right"),
        ("P50", "right"),
        ("P95", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for cell in stats.cells:
        table.add_row(
            cell.cell or "default",
            str(cell.results),
            f"{100 * cell.success_rate:.1f}%",
            ms_text(cell.duration_p50_ms),
            ms_text(cell.duration_p95_ms),
        )
    return table


def jobs_table(jobs: Sequence[runs_pb2.Job]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("JOB", "STATUS", "ATTEMPT", "OUTCOME", "CELL", "RETRY AT", "ERROR"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            job.id,
            styled(job_status(job)),
            str(job.attempt),
            outcome_name(job.outcome) or "-",
            job.cell.key or "-",
            short_time_text(job.retry_at) if job.HasField("retry_at") else "-",
            (job.error or "")[:80],
        )
    return table


def hosts_table(hosts: Sequence[nodes_pb2.HostBackoff], *, now: datetime | None = None) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("HOST", "ERRORS IN A ROW", "BACKING OFF UNTIL"):
        table.add_column(column)
    for host in hosts:
        table.add_row(
            host.host,
            str(host.consecutive_errors),
            short_time_text(host.until) if host.HasField("until") else "-",
        )
    return table


RESULT_COLUMNS = (
    "job_id",
    "attempt",
    "index",
    "outcome",
    "error_class",
    "http_status",
    "duration_ms",
    "ttfb_ms",
    "fcp_ms",
    "lcp_ms",
    "cls",
    "bytes",
    "requests",
    "target_url",
    "final_url",
    "cell",
    "account",
    "node_id",
    "error",
    "extracted",
)


def result_row(result: Any) -> dict[str, Any]:
    """A flat row of a session result for CSV and tables (JSONL keeps the whole message)."""
    data = message_dict(result)
    return {
        "job_id": result.job_id,
        "attempt": result.attempt,
        "index": result.index,
        "outcome": outcome_name(result.outcome),
        "error_class": data.get("error_class", ""),
        "http_status": result.http_status,
        "duration_ms": round(result.duration_ms, 1),
        "ttfb_ms": round(result.vitals.ttfb_ms, 1),
        "fcp_ms": round(result.vitals.fcp_ms, 1),
        "lcp_ms": round(result.vitals.lcp_ms, 1),
        "cls": round(result.vitals.cls, 4),
        "bytes": result.bytes_transferred,
        "requests": result.request_count,
        "target_url": result.target_url,
        "final_url": result.final_url,
        "cell": result.cell.key,
        "account": result.account,
        "node_id": result.node_id,
        "error": result.error,
        "extracted": json.dumps(data.get("extracted") or {}, sort_keys=True)
        if result.HasField("extracted")
        else "",
    }


def results_outcome_name(value: common_pb2.Outcome.ValueType) -> str:
    return outcome_name(value)

"""`run validate` / `run create --dry-run`: the plan summary for people (tables, a histogram)
and for programs (-o json/yaml)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from cli import _output
from cli._output import (
    Column,
    OutputFormat,
    print_json,
    print_jsonl,
    print_table,
    print_yaml,
    say,
    write_csv,
)
from cli._text import human_duration, plural
from services.scheduler._plan_summary import (
    CellCount,
    PlanSummary,
    TargetCount,
    TimelineBucket,
)

# The allowlist is the operator's server configuration: only the scheduler knows it (it answers
# CreateRun with validate_only). Without a gateway to ask, a host's verdict is unknown.
ALLOWLIST_UNKNOWN = "unknown (no gateway to ask)"


def host_verdicts(plan: Any) -> dict[str, str]:
    """host → "allowed" or "refused: <reason>", from the server's RunPlanSummary."""
    return {
        host.host: "allowed" if host.allowed else f"refused: {host.reason}" for host in plan.hosts
    }


_BLOCKS = " ▏▎▍▌▋▊▉█"


def plan_data(
    summary: PlanSummary, *, name: str = "", verdicts: dict[str, str] | None = None
) -> dict[str, Any]:
    verdicts = verdicts or {}
    return {
        "name": name,
        "sessions": summary.sessions,
        "pacing": summary.pacing,
        "span": human_duration(summary.span),
        "bucket": human_duration(summary.bucket),
        "peak_per_minute": round(summary.peak_per_minute, 3),
        "cells": [{"cell": cell.key, "sessions": cell.sessions} for cell in summary.cells],
        "targets": [{"url": t.url, "sessions": t.sessions} for t in summary.targets],
        "hosts": [
            {"host": host, "allowlist": verdicts.get(host, ALLOWLIST_UNKNOWN)}
            for host in summary.hosts
        ],
        "timeline": [
            {
                "offset": human_duration(bucket.offset),
                "sessions": bucket.sessions,
                "per_minute": round(summary.per_minute(bucket), 3),
            }
            for bucket in summary.timeline
        ],
    }


def timeline_columns(summary: PlanSummary) -> list[Column[TimelineBucket]]:
    return [
        Column(header="OFFSET", text=lambda bucket: human_duration(bucket.offset),
               value=lambda bucket: bucket.offset.total_seconds(), key="offset_s"),
        Column(header="SESSIONS", text=lambda bucket: str(bucket.sessions),
               value=lambda bucket: bucket.sessions),
        Column(header="PER MINUTE", text=lambda bucket: f"{summary.per_minute(bucket):.3f}",
               value=lambda bucket: round(summary.per_minute(bucket), 3)),
    ]  # fmt: skip


def bar(value: float, peak: float, width: int) -> str:
    """A horizontal bar in eighths of a character."""
    if peak <= 0 or width <= 0:
        return ""
    eighths = round(8 * width * value / peak)
    if value > 0 and eighths == 0:
        eighths = 1  # a bucket with sessions always shows
    return "█" * (eighths // 8) + (_BLOCKS[eighths % 8] if eighths % 8 else "")


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


def print_plan(
    summary: PlanSummary,
    *,
    name: str,
    output: OutputFormat,
    title: str,
    verdicts: dict[str, str] | None = None,
) -> None:
    verdicts = verdicts or {}
    if output is OutputFormat.json:
        print_json(plan_data(summary, name=name, verdicts=verdicts))
        return
    if output is OutputFormat.jsonl:
        print_jsonl([plan_data(summary, name=name, verdicts=verdicts)])
        return
    if output is OutputFormat.csv:  # the timeline, the series a sheet or a plot wants
        write_csv(timeline_columns(summary), summary.timeline)
        return
    if output is OutputFormat.yaml:
        print_yaml(plan_data(summary, name=name, verdicts=verdicts))
        return
    wide = output is OutputFormat.wide
    pacing = summary.pacing
    if summary.span.total_seconds() > 0:
        pacing += f", the last due after {human_duration(summary.span)}"
    say(title)
    say(f"{plural(summary.sessions, 'session')}, pacing {pacing}")
    total = summary.sessions
    say("")
    cell_columns: list[Column[CellCount]] = [
        Column(header="CELL", text=lambda cell: cell.key, wrap=20),
        Column(header="SESSIONS", text=lambda cell: f"{cell.sessions:,}", right=True),
        Column(header="SHARE", text=lambda cell: _share(cell.sessions, total), right=True),
    ]
    print_table(cell_columns, summary.cells, wide=wide)
    say("")
    target_columns: list[Column[TargetCount]] = [
        Column(header="TARGET", text=lambda target: target.url, wrap=24),
        Column(header="SESSIONS", text=lambda target: f"{target.sessions:,}", right=True),
    ]
    print_table(target_columns, summary.targets, wide=wide)
    say("")
    host_columns: list[Column[str]] = [
        Column(header="HOST", text=lambda host: host),
        Column(header="ALLOWLIST", text=lambda host: verdicts.get(host, ALLOWLIST_UNKNOWN)),
    ]
    print_table(host_columns, summary.hosts, wide=wide)
    say("")
    _print_timeline(summary)


def _print_timeline(summary: PlanSummary) -> None:
    if summary.bucket.total_seconds() <= 0:
        say(
            f"timeline: all {summary.sessions:,} due at the start; fleet capacity and "
            "limits.max_concurrency pace them"
        )
        return
    say(f"timeline: sessions per minute, in {human_duration(summary.bucket)} buckets")
    labels = [f"+{human_duration(bucket.offset)}" for bucket in summary.timeline]
    rates = [f"{summary.per_minute(bucket):,.1f}/min" for bucket in summary.timeline]
    label_width = max(len(label) for label in labels)
    rate_width = max(len(rate) for rate in rates)
    width = max(10, _output.console.width - label_width - rate_width - 4)
    peak = summary.peak_per_minute
    bucket: TimelineBucket
    for label, rate, bucket in zip(labels, rates, summary.timeline, strict=True):
        line = Text(f"{label:>{label_width}}  ")
        drawn = bar(summary.per_minute(bucket), peak, width)
        line.append(f"{drawn:<{width}}", style="cyan")
        line.append(f"  {rate:>{rate_width}}")
        _output.console.print(line, soft_wrap=True, no_wrap=True, overflow="ignore", crop=False)

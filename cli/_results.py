"""Session results for people and programs: the table, CSV rows, and the top failure reasons."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cli._data import enum_field_text, message_data
from cli._output import Column
from cli._text import ms_text
from cli._views import outcome_style
from smartfleet.v1 import common_pb2, results_pb2

Result = results_pb2.SessionResult

# CSV columns: a flat row each (JSONL keeps every field of the message).
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


def result_row(result: Result) -> dict[str, Any]:
    """A flat row of a session result, spelt as JSON spells the same fields."""
    extracted = message_data(result).get("extracted") if result.HasField("extracted") else None
    return {
        "job_id": result.job_id,
        "attempt": result.attempt,
        "index": result.index,
        "outcome": enum_field_text(result, "outcome"),
        "error_class": enum_field_text(result, "error_class"),
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
        "extracted": json.dumps(extracted, sort_keys=True) if extracted else "",
    }


def _column(key: str, header: str, **options: Any) -> Column[dict[str, Any]]:
    return Column(
        header=header,
        key=key,
        text=lambda row: "-" if row[key] in ("", None) else str(row[key]),
        value=lambda row: row[key],
        **options,
    )


# The table reads flat rows; its columns are those of the CSV, ordered for people.
RESULT_TABLE_COLUMNS: list[Column[dict[str, Any]]] = [
    _column("job_id", "JOB"),
    _column("attempt", "TRY", right=True, priority=4),
    _column(
        "outcome",
        "OUTCOME",
        style=lambda row: outcome_style(row["outcome"]),
    ),
    _column("http_status", "HTTP", right=True, priority=2),
    Column(
        header="TIME",
        key="duration_ms",
        text=lambda row: ms_text(row["duration_ms"]),
        value=lambda row: row["duration_ms"],
        right=True,
        priority=3,
    ),
    _column("error", "ERROR", wrap=24, priority=1),
    _column("cell", "CELL", wrap=12, priority=5),
    _column("final_url", "FINAL URL", wrap=20, priority=6),
    _column("index", "#", right=True, wide=True),
    _column("error_class", "CLASS", wide=True),
    _column("node_id", "NODE", wide=True),
    _column("account", "ACCOUNT", wide=True),
    _column("lcp_ms", "LCP MS", right=True, wide=True),
    _column("bytes", "BYTES", right=True, wide=True),
]


# -- failure reasons ------------------------------------------------------------------------------

# Computed by the client until the server answers with an aggregate: how many failed results,
# and how many results in all, it reads at most (the counts then cover what it read).
FAILURE_SCAN_LIMIT = 5000
RESULT_SCAN_LIMIT = 50_000
_REASON_CHARS = 200


@dataclass(slots=True)
class FailureReason:
    """One reason sessions failed: the outcome and error text, how often, one job to look at."""

    outcome: str
    error: str
    count: int
    example_job: str

    def data(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "error": self.error,
            "count": self.count,
            "example_job_id": self.example_job,
        }


@dataclass(slots=True)
class FailureSummary:
    reasons: list[FailureReason] = field(default_factory=list)
    failures_read: int = 0
    results_read: int = 0
    complete: bool = True  # False: the scan stopped at a limit, counts are a lower bound

    def data(self) -> dict[str, Any]:
        return {
            "reasons": [reason.data() for reason in self.reasons],
            "failures_read": self.failures_read,
            "results_read": self.results_read,
            "complete": self.complete,
        }


def reason_text(error: str) -> str:
    """The first line of an error, bounded: what groups failures and what people read."""
    first = (error.strip().splitlines() or [""])[0]
    return first if len(first) <= _REASON_CHARS else first[: _REASON_CHARS - 1] + "…"


def failure_reasons(
    results: Iterable[Result],
    *,
    top: int = 5,
    scan_limit: int = FAILURE_SCAN_LIMIT,
    result_limit: int = RESULT_SCAN_LIMIT,
) -> FailureSummary:
    """The most frequent (outcome, error) among failed results, with counts and an example.

    One function so a server-side aggregate can replace it; it reads at most `scan_limit`
    failed results and `result_limit` results in all, and says so when it stopped there.
    """
    groups: dict[tuple[str, str], FailureReason] = {}
    summary = FailureSummary()
    for result in results:
        if summary.failures_read >= scan_limit or summary.results_read >= result_limit:
            summary.complete = False
            break
        summary.results_read += 1
        if result.outcome == common_pb2.OUTCOME_OK:
            continue
        summary.failures_read += 1
        outcome = enum_field_text(result, "outcome")
        key = (outcome, reason_text(result.error))
        reason = groups.get(key)
        if reason is None:
            groups[key] = FailureReason(outcome, key[1], 1, result.job_id)
        else:
            reason.count += 1
    ordered = sorted(groups.values(), key=lambda reason: -reason.count)  # stable: first seen
    summary.reasons = ordered[:top]
    return summary

"""smartctl's output without a fleet: the table helper at 80 and 200 columns, one spelling per value."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from rich.console import Console

from cli._data import enum_prefix, enum_text, message_data
from cli._output import Column, OutputFormat, emit_list, layout_table, print_table, redirect_console
from cli._results import RESULT_TABLE_COLUMNS, failure_reasons, result_row
from cli._text import human_duration, plural
from cli._views import JOB_COLUMNS, RUN_COLUMNS, node_columns
from smartfleet.v1 import accounts_pb2, common_pb2, nodes_pb2, results_pb2, runs_pb2

LONG_ID = "0123456789abcdef-1234567"


def rendered(width: int, draw: Callable[[], None]) -> str:
    console = Console(record=True, width=width)
    with redirect_console(console):
        draw()
    return console.export_text()


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def many_runs() -> list[runs_pb2.Run]:
    runs = []
    for number in range(3):
        run = runs_pb2.Run(
            id=f"{number:016x}",
            name="a rather long run name that must wrap " * (number + 1),
            status=runs_pb2.RUN_STATUS_RUNNING,
            counters=runs_pb2.RunCounters(
                planned=1_000_000, succeeded=999_999, failed=12, retrying=3, in_flight=40
            ),
        )
        run.created_at.FromDatetime(datetime(2025, 1, 1, tzinfo=UTC))
        runs.append(run)
    return runs


def a_job(index: int) -> runs_pb2.Job:
    return runs_pb2.Job(
        id=f"{LONG_ID}{index}",
        status=runs_pb2.JOB_STATUS_DEAD,
        attempt=4,
        outcome=common_pb2.OUTCOME_NAVIGATION_ERROR,
        error="step 4 (assert): expected text 'Order placed' on the page, found no such text",
        cell=runs_pb2.Cell(key="Pixel 7 / de-DE / Europe/Berlin / chromium"),
        target_url="http://127.0.0.1:8080/checkout",
    )


@pytest.mark.parametrize("width", [80, 200])
def test_tables_fit_the_width_and_never_cut_an_id(width: int) -> None:
    """At 80 and 200 columns every line fits, ids are whole and headers are one line each."""
    nodes = [
        nodes_pb2.Node(
            info=nodes_pb2.NodeInfo(
                node_id=f"browser-host-{n}.eu-west.internal",
                host="browser-host.eu-west.internal",
                engines=[common_pb2.ENGINE_CHROMIUM],
                slots=16,
                labels={"region": "eu", "browser": "156"},
                version="0.1.0",
                playwright_version="1.65.2",
                browser_versions={"chromium": "156.0.7444.59"},
            ),
            state=nodes_pb2.NODE_STATE_READY,
        )
        for n in range(2)
    ]
    for columns, items, ids in (
        (RUN_COLUMNS, many_runs(), [run.id for run in many_runs()]),
        (JOB_COLUMNS, [a_job(n) for n in range(3)], [a_job(n).id for n in range(3)]),
        (node_columns(), nodes, [node.info.node_id for node in nodes]),
    ):
        text = rendered(width, lambda columns=columns, items=items: print_table(columns, items))
        lines = lines_of(text)
        assert all(len(line) <= width for line in lines), "\n".join(lines)
        for identifier in ids:
            assert any(identifier in line for line in lines), (identifier, text)
        assert "…" not in text
        header = lines[0].split()
        assert header[0] in ("RUN", "JOB", "NODE")
        # Headers are never wrapped: the second line is a data row starting with an id.
        assert lines[1].split()[0] in ids


def test_narrow_tables_drop_low_priority_columns_and_wide_shows_all() -> None:
    """At 80 columns `run ls` leaves out RETRYING before FAILED; -o wide shows every column at full width."""
    narrow = lines_of(rendered(80, lambda: print_table(RUN_COLUMNS, many_runs())))[0]
    assert "FAILED" in narrow and "OK" in narrow and "RETRYING" not in narrow
    assert "PLANN…" not in narrow and "PLANNED" in narrow
    wide = rendered(80, lambda: print_table(RUN_COLUMNS, many_runs(), wide=True))
    header = lines_of(wide)[0]
    for column in RUN_COLUMNS:
        assert column.header in header
    assert "a rather long run name that must wrap a rather" in wide  # no wrapping in wide
    roomy = lines_of(rendered(200, lambda: print_table(RUN_COLUMNS, many_runs())))[0]
    assert "RETRYING" in roomy and "IN FLIGHT" in roomy and "TARGETS" not in roomy


def test_errors_wrap_instead_of_being_cut() -> None:
    """A long error wraps inside its column at 80 columns; every word of it is still there."""
    job = a_job(0)
    text = rendered(80, lambda: print_table(JOB_COLUMNS, [job]))
    joined = " ".join(" ".join(lines_of(text)).split())
    for word in job.error.split():
        assert word in joined


def test_layout_keeps_essential_columns_even_when_too_narrow() -> None:
    """Columns of priority 0 are never left out: a 20-column terminal gets a long line, not a cut id."""
    columns: list[Column[str]] = [
        Column(header="ID", text=lambda item: item),
        Column(header="EXTRA", text=lambda item: "x" * 30, priority=1),
    ]
    plan = layout_table(columns, [[LONG_ID, "x" * 30]], width=20, wide=False)
    assert plan.shown == (0,) and plan.widths == (len(LONG_ID),) and plan.dropped == ("EXTRA",)


def test_one_spelling_in_json_csv_jsonl_yaml_and_table() -> None:
    """An outcome is `assertion_failed` and an error class `permanent` in every format; numbers stay numbers."""
    result = results_pb2.SessionResult(
        job_id=LONG_ID,
        attempt=2,
        index=7,
        outcome=common_pb2.OUTCOME_ASSERTION_FAILED,
        error_class=common_pb2.ERROR_CLASS_PERMANENT,
        error="step 4 (assert): expected text",
        bytes_transferred=123_456_789_012,
    )
    data = message_data(result)
    assert (data["outcome"], data["error_class"]) == ("assertion_failed", "permanent")
    assert data["index"] == 7 and data["bytes_transferred"] == 123_456_789_012
    row = result_row(result)
    assert (row["outcome"], row["error_class"]) == ("assertion_failed", "permanent")
    table = rendered(200, lambda: print_table(RESULT_TABLE_COLUMNS, [row]))
    assert "assertion_failed" in table and "OUTCOME_" not in table
    assert "step 4 (assert): expected text" in table, "the table has an ERROR column"
    out = io.StringIO()
    console = Console(file=out, width=200)
    for fmt in (OutputFormat.json, OutputFormat.jsonl, OutputFormat.yaml, OutputFormat.csv):
        captured = io.StringIO()
        with redirect_console(console), _stdout(captured):
            emit_list(
                [row],
                columns=RESULT_TABLE_COLUMNS,
                output=fmt,
                key="results",
                data=lambda item: item,
            )
        text = captured.getvalue()
        if fmt is OutputFormat.json:
            parsed = json.loads(text)["results"][0]
        elif fmt is OutputFormat.jsonl:
            parsed = json.loads(text.splitlines()[0])
        elif fmt is OutputFormat.yaml:
            parsed = yaml.safe_load(text)["results"][0]
        else:
            parsed = next(csv.DictReader(io.StringIO(text)))
        assert parsed["outcome"] == "assertion_failed", fmt
        assert parsed["error_class"] == "permanent", fmt


class _stdout:
    """Route sys.stdout to a buffer (emit_list writes machine formats there)."""

    def __init__(self, target: io.StringIO) -> None:
        self.target = target

    def __enter__(self) -> None:
        import sys

        self.saved, sys.stdout = sys.stdout, self.target

    def __exit__(self, *exc: object) -> None:
        import sys

        sys.stdout = self.saved


def test_enum_spelling_is_derived_from_any_enum_descriptor() -> None:
    """Every enum loses its own type prefix, lowercase: run status, node state, outcome, error class."""
    assert enum_prefix(runs_pb2.RunStatus.DESCRIPTOR) == "RUN_STATUS_"
    assert enum_text(runs_pb2.RunStatus.DESCRIPTOR, runs_pb2.RUN_STATUS_PAUSED) == "paused"
    assert enum_text(nodes_pb2.NodeState.DESCRIPTOR, nodes_pb2.NODE_STATE_DRAINED) == "drained"
    assert enum_text(common_pb2.ErrorClass.DESCRIPTOR, 2) == "transient"
    assert enum_text(common_pb2.Outcome.DESCRIPTOR, 99) == "99"  # newer than this client


def test_durations_read_as_specs_write_them() -> None:
    """Backoff 5m/15m/45m stays 5m/15m/45m in JSON (not 300s); cooldown 90s is `90s`."""
    spec = runs_pb2.RunSpec(targets=["http://x/"], sessions=20)
    for minutes in (5, 15, 45):
        spec.retry.backoff.add().FromTimedelta(timedelta(minutes=minutes))
    data = message_data(spec)
    assert data["sessions"] == 20
    assert data["retry"]["backoff"] == ["5m", "15m", "45m"]
    account = accounts_pb2.Account(name="a")
    account.cooldown.FromTimedelta(timedelta(seconds=90))
    assert message_data(account)["cooldown"] == "90s"
    assert human_duration(timedelta(seconds=599.2)) == "9m59s"
    assert human_duration(timedelta(hours=30)) == "1d6h"


def test_plurals() -> None:
    """1 session, 2 sessions, 1,000 sessions."""
    assert plural(1, "session") == "1 session"
    assert plural(0, "session") == "0 sessions"
    assert plural(1000, "session") == "1,000 sessions"


def _failed(job: str, error: str) -> results_pb2.SessionResult:
    return results_pb2.SessionResult(
        job_id=job, outcome=common_pb2.OUTCOME_ASSERTION_FAILED, error=error
    )


def test_failure_reasons_count_group_and_stop_at_the_limit() -> None:
    """Reasons are grouped by outcome and error, ordered by count with the first job as example; the scan is bounded."""
    results = [
        _failed("r-1", "step 4 (assert): expected text 'Paid'"),
        results_pb2.SessionResult(job_id="r-2", outcome=common_pb2.OUTCOME_OK),
        _failed("r-3", "step 0 (goto): HTTP 500"),
        _failed("r-4", "step 0 (goto): HTTP 500\nmore detail"),
        _failed("r-5", "step 4 (assert): expected text 'Paid'"),
        _failed("r-6", "step 0 (goto): HTTP 500"),
    ]
    summary = failure_reasons(results)
    assert [(r.count, r.error, r.example_job) for r in summary.reasons] == [
        (3, "step 0 (goto): HTTP 500", "r-3"),
        (2, "step 4 (assert): expected text 'Paid'", "r-1"),
    ]
    assert summary.complete and summary.failures_read == 5
    bounded = failure_reasons(results, scan_limit=2)
    assert not bounded.complete and bounded.failures_read == 2
    assert sum(reason.count for reason in bounded.reasons) == 2
    few = failure_reasons(results, result_limit=3)  # ok results count towards the bound too
    assert not few.complete and (few.results_read, few.failures_read) == (3, 2)


def test_long_urls_wrap_after_separators_and_empty_columns_are_left_out() -> None:
    """A URL wraps after `/` rather than inside a host; an optional column of only `-` is not shown."""
    from cli._text import wrap_text as _wrapped

    assert _wrapped("HTTP 404 from http://127.0.0.1:35971/missing", 24) == [
        "HTTP 404 from",
        "http://127.0.0.1:35971/",
        "missing",
    ]
    assert all(len(line) <= 10 for line in _wrapped("x" * 35, 10))
    assert "".join(_wrapped("x" * 35, 10)) == "x" * 35
    job = a_job(0)
    job.ClearField("retry_at")
    header = lines_of(rendered(200, lambda: print_table(JOB_COLUMNS, [job])))[0]
    assert "RETRY AT" not in header and "ERROR" in header
    wide = lines_of(rendered(200, lambda: print_table(JOB_COLUMNS, [job], wide=True)))[0]
    assert "RETRY AT" in wide

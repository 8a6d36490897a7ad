"""`smartctl run watch`: a live progress bar from WatchRun, then a summary from GetRunStats."""

from __future__ import annotations

import textwrap
import time
from datetime import timedelta
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli import _output
from cli._client import FleetClient, is_completed, is_draft, is_final
from cli._data import message_data
from cli._errors import EXIT_ERROR, EXIT_FAILURES, CliError, err_console
from cli._output import (
    UI,
    OutputFormat,
    print_json,
    print_jsonl,
    print_table,
    print_yaml,
    say,
    write_csv,
)
from cli._results import FailureSummary, failure_reasons
from cli._text import plural
from cli._views import (
    CELL_COLUMNS,
    METRIC_COLUMNS,
    OUTCOME_COLUMNS,
    outcome_rows,
    run_duration_text,
    run_status,
    stats_summary,
    styled,
)
from services.common.durations import format_duration
from smartfleet.v1 import runs_pb2


def exit_code_for(*, completed: bool, planned: int, succeeded: int, failed: int) -> int:
    """0: completed with every session ok; 1: completed with failures; 2: cancelled or failed."""
    if not completed:
        return EXIT_ERROR
    return 0 if failed == 0 and succeeded >= planned else EXIT_FAILURES


def progress_detail(counters: runs_pb2.RunCounters) -> str:
    """ok and failed always; retrying and in flight only when there are some (80 columns)."""
    parts = [f"[green]{counters.succeeded} ok[/]", f"[red]{counters.failed} failed[/]"]
    if counters.retrying:
        parts.append(f"{counters.retrying} retrying")
    if counters.in_flight:
        parts.append(f"{counters.in_flight} in flight")
    return " ".join(parts)


def run_failure_reasons(client: FleetClient, run: runs_pb2.Run) -> FailureSummary:
    """The run's top failure reasons. Computed here from its failed results for now; a
    server-side aggregate (GetRunStats) replaces this one function."""
    if run.counters.failed == 0 and run.counters.retrying == 0 and run.counters.dead == 0:
        return FailureSummary()
    return failure_reasons(client.iter_results(run.id))


def watch_run(
    client: FleetClient,
    run_id: str,
    *,
    output: OutputFormat,
    timeout: timedelta | None = None,
    wait_start: bool = False,
) -> int:
    """Follow the run until it is final, print the outcome, return the exit code."""
    deadline = time.monotonic() + timeout.total_seconds() if timeout is not None else None
    # One plain read first: an unknown run (or a draft) fails before any progress bar is drawn.
    last = client.get_run(run_id)
    if is_draft(last) and not wait_start:
        raise CliError(
            f"run {last.id} is a draft: start it with `smartctl run start {last.id}` "
            "(or watch with --wait-start to wait for that)"
        )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not output.is_table or UI.quiet,
    )
    with progress:
        task = progress.add_task("waiting", total=None, detail="")
        for run in client.watch_run(run_id, deadline=deadline):
            last = run
            counters = run.counters
            progress.update(
                task,
                description=f"{escape(run.name or run.id)} {styled(run_status(run))}",
                total=counters.planned or None,
                completed=counters.succeeded + counters.failed,
                detail=progress_detail(run.counters),
            )
    if not is_final(last):
        counters = last.counters
        assert timeout is not None  # the watch only ends early at the deadline
        raise CliError(
            f"gave up after {format_duration(timeout)}: run {last.id} is {run_status(last)} "
            f"({counters.succeeded + counters.failed}/{counters.planned} final); it goes on"
        )
    stats = client.get_run_stats(run_id)
    failures = run_failure_reasons(client, last)
    counters = last.counters
    code = exit_code_for(
        completed=is_completed(last),
        planned=counters.planned,
        succeeded=counters.succeeded,
        failed=counters.failed,
    )
    if not output.is_table:
        data: dict[str, Any] = {
            "run": message_data(last),
            "stats": message_data(stats),
            "failures": failures.data(),
            "exit_code": code,
        }
        if output is OutputFormat.yaml:
            print_yaml(data)
        elif output is OutputFormat.jsonl:
            print_jsonl([data])
        elif output is OutputFormat.csv:
            write_csv(OUTCOME_COLUMNS, outcome_rows(stats))  # the rows of the outcome table
        else:
            print_json(data)
        return code
    print_summary(last, stats, failures, code=code, wide=output is OutputFormat.wide)
    return code


def print_summary(
    run: runs_pb2.Run,
    stats: runs_pb2.RunStats,
    failures: FailureSummary,
    *,
    code: int,
    wide: bool = False,
) -> None:
    say("")
    print_table(OUTCOME_COLUMNS, outcome_rows(stats), wide=wide)
    say(stats_summary(stats))
    if failures.reasons:
        say("")
        scope = (
            ""
            if failures.complete
            else f" (in the first {failures.results_read:,} results, "
            f"{failures.failures_read:,} of them failed)"
        )
        say(f"top failure reasons{scope}:")
        width = max(40, _output.console.width)
        for reason in failures.reasons:
            line = f"{reason.count:>8}  {reason.outcome}: {reason.error or '(no error text)'}"
            say(textwrap.fill(line, width, subsequent_indent=" " * 10, break_on_hyphens=False))
            say(f"          e.g. job {reason.example_job}")
    if stats.metrics:
        say("")
        print_table(METRIC_COLUMNS, stats.metrics, wide=wide)
    if len(stats.cells) > 1:
        say("")
        print_table(CELL_COLUMNS, stats.cells, wide=wide)
    counters = run.counters
    if counters.dead:
        say(f"{plural(counters.dead, 'dead job')}: smartctl run jobs {run.id} --status dead")
    status = run_status(run)
    final = counters.succeeded + counters.failed
    if code == 0:
        verdict = f"[green]✓ run {escape(run.id)} completed: all {plural(counters.succeeded, 'session')} ok[/]"
    elif code == EXIT_FAILURES:
        verdict = (
            f"[red]✗ run {escape(run.id)} completed: {counters.failed} of "
            f"{plural(final, 'session')} failed[/]"
        )
    else:
        verdict = (
            f"[red]✗ run {escape(run.id)} ended {status}[/] ({final}/{counters.planned} final)"
        )
    _output.console.print(f"{verdict} in {run_duration_text(run)}", soft_wrap=True)

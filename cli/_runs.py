"""`smartctl run …`: create, start, get, list and watch runs."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from cli._context import open_client
from cli._errors import err_console, report_errors
from cli._output import (
    RESULT_COLUMNS,
    OutputFormat,
    console,
    jobs_table,
    message_dict,
    print_json,
    result_row,
    run_status,
    run_table,
    runs_table,
)
from cli._spec import build_spec, load_spec_document
from cli._watch import watch_run

app = typer.Typer(help="Create, start, inspect and watch runs.", no_args_is_help=True)

OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people, json for programs.")
]
RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="The run id.")]


@app.command("create")
@report_errors
def create(
    ctx: typer.Context,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            metavar="URL",
            help="Target URL (repeat for several); replaces the file's targets.",
        ),
    ] = None,
    sessions: Annotated[
        int | None, typer.Option("--sessions", "-n", help="Total sessions (default 1).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A name for the run.")] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            help="At most this many sessions at once (0: fleet capacity).",
        ),
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option("--timeout", metavar="DURATION", help="Session timeout, e.g. 30s or 2m."),
    ] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="chromium (default), firefox or webkit.")
    ] = None,
    spec_file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            metavar="SPEC",
            help="Run spec as YAML or JSON; flags override its fields.",
        ),
    ] = None,
    start: Annotated[bool, typer.Option("--start", help="Start the run at once.")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a run (a draft unless --start) and print its id."""
    document = load_spec_document(spec_file) if spec_file else None
    spec = build_spec(
        document=document,
        source=str(spec_file) if spec_file else "spec",
        targets=targets or (),
        sessions=sessions,
        name=name,
        concurrency=concurrency,
        timeout=timeout,
        engine=engine,
    )
    with open_client(ctx) as client:
        run = client.create_run(spec, start=start)
    if output is OutputFormat.json:
        print_json({"run_id": run.id, "status": run_status(run)})
        return
    # The id alone on stdout, so `RUN=$(smartctl run create …)` works; the rest is for people.
    print(run.id, flush=True)
    hint = (
        f"watch it: smartctl run watch {run.id}"
        if start
        else f"start it: smartctl run start {run.id}"
    )
    err_console.print(
        f"created run {escape(run.id)} ({run_status(run)}, {run.spec.sessions or spec.sessions} sessions); "
        f"{escape(hint)}"
    )


@app.command("start")
@report_errors
def start_run(
    ctx: typer.Context, run_id: RunArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Start a draft run."""
    with open_client(ctx) as client:
        run = client.start_run(run_id)
    if output is OutputFormat.json:
        print_json(message_dict(run))
        return
    console.print(
        f"run {escape(run.id)} is {run_status(run)}; watch it: smartctl run watch {escape(run.id)}"
    )


@app.command("get")
@report_errors
def get_run(
    ctx: typer.Context, run_id: RunArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Show a run: spec, status and counters."""
    with open_client(ctx) as client:
        run = client.get_run(run_id)
    if output is OutputFormat.json:
        print_json(message_dict(run))
        return
    console.print(run_table(run))


@app.command("ls")
@report_errors
def list_runs(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="At most this many runs, newest first.")
    ] = 20,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List recent runs."""
    with open_client(ctx) as client:
        runs = client.list_runs(limit=limit)
    if output is OutputFormat.json:
        print_json({"runs": [message_dict(run) for run in runs]})
        return
    if not runs:
        console.print("no runs yet: smartctl run create --target URL --sessions N --start")
        return
    console.print(runs_table(runs))


@app.command("watch")
@report_errors
def watch(
    ctx: typer.Context, run_id: RunArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Follow a run to its end, then summarise it.

    Exit code 0 when the run completed with every session ok, 1 when it completed with
    failed sessions, 2 when it was cancelled or failed, or on error.
    """
    with open_client(ctx) as client:
        code = watch_run(client, run_id, output=output)
    raise typer.Exit(code)


def _lifecycle(ctx: typer.Context, run_id: str, output: OutputFormat, verb: str) -> None:
    with open_client(ctx) as client:
        run = getattr(client, f"{verb}_run")(run_id)
    if output is OutputFormat.json:
        print_json(message_dict(run))
        return
    console.print(f"run {escape(run.id)} is {run_status(run)}")


@app.command("pause")
@report_errors
def pause(
    ctx: typer.Context, run_id: RunArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Stop dispatching new sessions; sessions already running finish."""
    _lifecycle(ctx, run_id, output, "pause")


@app.command("resume")
@report_errors
def resume(
    ctx: typer.Context, run_id: RunArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Dispatch again after a pause."""
    _lifecycle(ctx, run_id, output, "resume")


@app.command("cancel")
@report_errors
def cancel(
    ctx: typer.Context, run_id: RunArgument, output: OutputOption = OutputFormat.table
) -> None:
    """End the run now: queued sessions are dropped, running ones aborted; results are kept."""
    _lifecycle(ctx, run_id, output, "cancel")


@app.command("expedite")
@report_errors
def expedite(
    ctx: typer.Context, run_id: RunArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Start every remaining session now, regardless of the pacing plan."""
    _lifecycle(ctx, run_id, output, "expedite")


@app.command("jobs")
@report_errors
def jobs(
    ctx: typer.Context,
    run_id: RunArgument,
    status: Annotated[
        str, typer.Option("--status", help="Only jobs in this status: dead, retry_wait, failed, …")
    ] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, max=5000)] = 100,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List a run's jobs (one per session), e.g. the dead ones."""
    with open_client(ctx) as client:
        found = client.list_jobs(run_id, status=status, limit=limit)
    if output is OutputFormat.json:
        print_json({"jobs": [message_dict(job) for job in found]})
        return
    if not found:
        console.print("no jobs" + (f" in status {escape(status)}" if status else ""))
        return
    console.print(jobs_table(found))


RESULT_TABLE_COLUMNS = (
    "index",
    "attempt",
    "outcome",
    "http_status",
    "duration_ms",
    "cell",
    "final_url",
)
# Short headers so the table fits a narrow terminal; only cell and URL give way.
RESULT_TABLE_HEADERS = {"index": "#", "attempt": "TRY", "http_status": "HTTP", "duration_ms": "MS"}
RESULT_TABLE_MAX_WIDTH = {"cell": 26, "final_url": 36}


class ResultFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


@app.command("results")
@report_errors
def results(
    ctx: typer.Context,
    run_id: RunArgument,
    fmt: Annotated[
        ResultFormat, typer.Option("--format", help="table, jsonl or csv.")
    ] = ResultFormat.table,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many (0: all).")] = 0,
) -> None:
    """Show or export a run's session results (JSONL keeps every field, CSV a flat row each)."""
    with open_client(ctx) as client:
        total = client.get_run_stats(run_id).results
        stream = client.iter_results(run_id)
        if fmt is ResultFormat.table:
            rows = [result_row(r) for r, _ in zip(stream, range(limit or 50), strict=False)]
            table = Table(box=None, pad_edge=False, header_style="bold")
            for column in RESULT_TABLE_COLUMNS:
                table.add_column(
                    RESULT_TABLE_HEADERS.get(column, column.upper()),
                    no_wrap=column not in RESULT_TABLE_MAX_WIDTH,
                    overflow="ellipsis",
                    max_width=RESULT_TABLE_MAX_WIDTH.get(column),
                )
            for row in rows:
                table.add_row(*(str(row[column]) for column in RESULT_TABLE_COLUMNS))
            console.print(table)
            if total > len(rows):
                err_console.print(
                    f"{len(rows)} of {total} results; export all with --format jsonl|csv --out FILE"
                )
            return
        written = export_results(
            stream, fmt=fmt.value, out=out, total=min(total, limit) if limit else total, limit=limit
        )
    if out is not None:
        err_console.print(f"wrote {written} results to {escape(str(out))}")


def export_results(
    stream: Iterable[Any], *, fmt: str, out: Path | None, total: int, limit: int
) -> int:
    """Write results as JSONL or CSV, with a progress bar when writing to a file."""
    handle = open(out, "w", newline="", encoding="utf-8") if out else sys.stdout
    written = 0
    try:
        writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS) if fmt == "csv" else None
        if writer:
            writer.writeheader()
        with Progress(transient=True, console=err_console, disable=out is None) as progress:
            task = progress.add_task("exporting", total=total or None)
            for result in stream:
                if limit and written >= limit:
                    break
                if writer:
                    writer.writerow(result_row(result))
                else:
                    handle.write(json.dumps(message_dict(result), sort_keys=True) + "\n")
                written += 1
                progress.advance(task)
    finally:
        if out:
            handle.close()
    return written

"""`smartctl run …`: create, start, get, list and watch runs."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from cli._context import open_client
from cli._errors import CliError, err_console, report_errors
from cli._output import (
    RESULT_COLUMNS,
    OutputFormat,
    console,
    jobs_table,
    message_dict,
    metric_text,
    print_json,
    result_row,
    run_status,
    run_table,
    runs_table,
)
from cli._spec import build_spec, load_spec_document
from cli._watch import watch_run
from services.common.contracts._enums import number
from smartfleet.v1 import runs_pb2

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
    statuses = []
    if status:
        try:
            statuses = [cast(Any, number(runs_pb2.JobStatus.DESCRIPTOR, status))]
        except ValueError as error:
            raise CliError(f"--status: {error}") from error
    with open_client(ctx) as client:
        found = client.list_jobs(run_id, statuses=statuses, limit=limit)
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


@app.command("artifacts")
@report_errors
def artifacts(
    ctx: typer.Context,
    run_id: RunArgument,
    job: Annotated[
        str, typer.Option("--job", "-j", metavar="JOB", help="Only this job's artifacts.")
    ] = "",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Download them into DIR (as <job>/<attempt>/<name>); without it, list them.",
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List or download a run's artifacts: screenshots, Playwright traces, HARs."""
    with open_client(ctx) as client:
        found = list(client.iter_artifacts(run_id, job_id=job))
        if out is None:
            _print_artifacts(found, run_id=run_id, job=job, output=output)
            return
        written = _download_artifacts(client, found, out)
    total = sum(artifact.size_bytes for artifact in found)
    if output is OutputFormat.json:
        print_json(
            {
                "run_id": run_id,
                "out": str(out),
                "files": [str(path) for path in written],
                "bytes": total,
            }
        )
        return
    where = escape(str(out))
    err_console.print(
        f"downloaded {len(written)} artifact(s), {metric_text('bytes', total)}, to {where}"
        if written
        else f"no artifacts for run {escape(run_id)}" + (f" job {escape(job)}" if job else "")
    )


def _print_artifacts(found: list[Any], *, run_id: str, job: str, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        print_json({"artifacts": [message_dict(artifact) for artifact in found]})
        return
    if not found:
        scope = f"job {escape(job)} of run {escape(run_id)}" if job else f"run {escape(run_id)}"
        console.print(
            f"no artifacts for {scope} (kept per the run's `artifacts` policy: "
            "never, on_failure or always)"
        )
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("JOB", "TRY", "NAME", "SIZE", "CREATED"):
        table.add_column(column, no_wrap=True)
    for artifact in found:
        table.add_row(
            escape(artifact.job_id),
            str(artifact.attempt),
            escape(artifact.name),
            metric_text("bytes", artifact.size_bytes),
            artifact.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)
    total = sum(artifact.size_bytes for artifact in found)
    err_console.print(
        f"{len(found)} artifact(s), {metric_text('bytes', total)}; "
        f"download with `smartctl run artifacts {escape(run_id)} --out DIR`"
    )


def _download_artifacts(client: Any, found: list[Any], out: Path) -> list[Path]:
    """Each artifact to out/<job>/<attempt>/<name>, written whole or not at all."""
    written: list[Path] = []
    total = sum(artifact.size_bytes for artifact in found)
    with Progress(transient=True, console=err_console) as progress:
        task = progress.add_task("downloading", total=total or None)
        for artifact in found:
            # The key's parts were checked by the scheduler; refuse anything else anyway.
            parts = (artifact.job_id, str(artifact.attempt), artifact.name)
            if any(not part or part.startswith(".") or "/" in part for part in parts):
                raise CliError(f"refusing the artifact key {artifact.key!r}")
            target = out.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            with open(partial, "wb") as handle:
                client.download_artifact(
                    artifact.key, handle, on_bytes=lambda n: progress.advance(task, n)
                )
            partial.replace(target)
            written.append(target)
    return written

"""`smartctl run …`: create, start, get, list and watch runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli._context import open_client
from cli._errors import err_console, report_errors
from cli._output import (
    OutputFormat,
    console,
    message_dict,
    print_json,
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

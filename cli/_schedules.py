"""`smartctl schedules …`: cron expressions that create and start a run on every tick."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli._errors import err_console, report_errors
from cli._output import (
    OutputFormat,
    console,
    message_dict,
    print_json,
    short_time_text,
    timestamp_text,
)
from cli._schedules_client import open_schedules_client
from cli._spec import build_spec, load_spec_document
from smartfleet.v1 import runs_pb2, schedules_pb2

app = typer.Typer(
    help="Manage schedules: a cron expression plus a run template; each tick starts a run.",
    no_args_is_help=True,
)

OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people, json for programs.")
]
NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")]


def schedule_message(
    name: str,
    *,
    cron: str,
    timezone: str,
    template: runs_pb2.RunSpec,
    paused: bool = False,
) -> schedules_pb2.Schedule:
    return schedules_pb2.Schedule(
        name=name, cron=cron, timezone=timezone, template=template, paused=paused
    )


def _state(schedule: schedules_pb2.Schedule) -> str:
    return "[yellow]paused[/]" if schedule.paused else "[green]active[/]"


def schedules_table(schedules: Sequence[schedules_pb2.Schedule]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("SCHEDULE", no_wrap=True)
    table.add_column("CRON", no_wrap=True)
    table.add_column("TIMEZONE", overflow="fold")
    for column in ("STATE", "NEXT", "LAST"):
        table.add_column(column, no_wrap=True)
    table.add_column("RUNS", justify="right", no_wrap=True)
    table.add_column("LAST RUN", no_wrap=True)
    for schedule in schedules:
        table.add_row(
            escape(schedule.name),
            escape(schedule.cron),
            escape(schedule.timezone or "UTC"),
            _state(schedule),
            short_time_text(schedule.next_fire_at),
            short_time_text(schedule.last_fire_at),
            str(schedule.runs_created),
            schedule.last_run_id or "-",
        )
    return table


def schedule_table(schedule: schedules_pb2.Schedule) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    template = schedule.template
    rows = [
        ("schedule", escape(schedule.name)),
        ("cron", f"{escape(schedule.cron)} ({escape(schedule.timezone or 'UTC')})"),
        ("state", _state(schedule)),
        ("next tick", timestamp_text(schedule.next_fire_at)),
        ("last tick", timestamp_text(schedule.last_fire_at)),
        ("runs created", str(schedule.runs_created)),
        ("last run", schedule.last_run_id or "-"),
        ("targets", escape("\n".join(template.targets)) or "-"),
        ("sessions", str(template.sessions)),
        ("created", timestamp_text(schedule.created_at)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def _show(schedule: schedules_pb2.Schedule, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        print_json(message_dict(schedule))
    else:
        console.print(schedule_table(schedule))


@app.command("create")
@report_errors
def create(
    ctx: typer.Context,
    name: NameArgument,
    cron: Annotated[
        str,
        typer.Option(
            "--cron",
            metavar="EXPR",
            help='Five fields ("*/5 * * * *"), a sixth for seconds, or @hourly/@daily/…',
        ),
    ],
    timezone: Annotated[
        str, typer.Option("--timezone", "--tz", help="IANA time zone the cron is read in.")
    ] = "UTC",
    spec_file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", metavar="SPEC", help="Run template as YAML or JSON (as `run create`)."
        ),
    ] = None,
    targets: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", metavar="URL", help="Target URL (repeat for several)."),
    ] = None,
    sessions: Annotated[
        int | None, typer.Option("--sessions", "-n", help="Sessions per run (default 1).")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-c", help="At most this many at once.")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option("--timeout", metavar="DURATION", help="Session timeout.")
    ] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="chromium (default), firefox or webkit.")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a schedule; each tick creates and starts a run named NAME-<YYYYmmddTHHMM>."""
    document = load_spec_document(spec_file) if spec_file else None
    template = build_spec(
        document=document,
        source=str(spec_file) if spec_file else "template",
        targets=targets or (),
        sessions=sessions,
        concurrency=concurrency,
        timeout=timeout,
        engine=engine,
    )
    message = schedule_message(name, cron=cron, timezone=timezone, template=template, paused=paused)
    with open_schedules_client(ctx) as client:
        schedule = client.create_schedule(message)
    _show(schedule, output)


@app.command("ls")
@report_errors
def list_schedules(ctx: typer.Context, output: OutputOption = OutputFormat.table) -> None:
    """List schedules with their next and last tick."""
    with open_schedules_client(ctx) as client:
        schedules = client.list_schedules()
    if output is OutputFormat.json:
        print_json({"schedules": [message_dict(schedule) for schedule in schedules]})
        return
    if not schedules:
        console.print(
            'no schedules yet: smartctl schedules create NAME --cron "*/15 * * * *" -f run.yaml'
        )
        return
    console.print(schedules_table(schedules))


@app.command("get")
@report_errors
def get_schedule(
    ctx: typer.Context, name: NameArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Show a schedule and its run template."""
    with open_schedules_client(ctx) as client:
        schedule = client.get_schedule(name)
    _show(schedule, output)


def _set_paused(ctx: typer.Context, name: str, *, paused: bool, output: OutputFormat) -> None:
    with open_schedules_client(ctx) as client:
        schedule = client.set_paused(name, paused=paused)
    if output is OutputFormat.json:
        print_json(message_dict(schedule))
        return
    if paused:
        console.print(f"schedule {escape(name)} is paused")
    else:
        console.print(
            f"schedule {escape(name)} is active; next tick {timestamp_text(schedule.next_fire_at)}"
        )


@app.command("pause")
@report_errors
def pause(
    ctx: typer.Context, name: NameArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Stop creating runs until resumed (runs already started go on)."""
    _set_paused(ctx, name, paused=True, output=output)


@app.command("resume")
@report_errors
def resume(
    ctx: typer.Context, name: NameArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Fire again from the next tick on (ticks missed while paused are skipped)."""
    _set_paused(ctx, name, paused=False, output=output)


@app.command("delete")
@report_errors
def delete(ctx: typer.Context, name: NameArgument) -> None:
    """Delete a schedule (the runs it created stay)."""
    with open_schedules_client(ctx) as client:
        client.delete_schedule(name)
    err_console.print(f"deleted schedule {escape(name)}")

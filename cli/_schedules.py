"""`smartctl schedules …`: cron expressions that create and start a run on every tick."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._context import output_format
from cli._data import message_data
from cli._errors import report_errors
from cli._output import Column, OutputFormat, OutputOption, emit_list, emit_one, hint, say
from cli._schedules_client import open_schedules_client
from cli._spec import build_spec, load_spec_document
from cli._text import short_time_text, timestamp_text, timestamp_value
from smartfleet.v1 import runs_pb2, schedules_pb2

app = typer.Typer(
    help="Manage schedules: a cron expression plus a run template; each tick starts a run.",
    no_args_is_help=True,
)

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
    return "paused" if schedule.paused else "active"


def _state_style(schedule: schedules_pb2.Schedule) -> str:
    return "yellow" if schedule.paused else "green"


SCHEDULE_COLUMNS: list[Column[schedules_pb2.Schedule]] = [
    Column(header="SCHEDULE", text=lambda schedule: schedule.name),
    Column(header="CRON", text=lambda schedule: schedule.cron),
    Column(header="TIMEZONE", text=lambda schedule: schedule.timezone or "UTC", priority=4),
    Column(header="STATE", text=_state, style=_state_style),
    Column(
        header="NEXT",
        text=lambda schedule: short_time_text(schedule.next_fire_at),
        value=lambda schedule: timestamp_value(schedule.next_fire_at),
        priority=1,
    ),
    Column(
        header="LAST",
        text=lambda schedule: short_time_text(schedule.last_fire_at),
        value=lambda schedule: timestamp_value(schedule.last_fire_at),
        priority=3,
    ),
    Column(
        header="RUNS",
        text=lambda schedule: str(schedule.runs_created),
        value=lambda schedule: schedule.runs_created,
        right=True,
        priority=2,
    ),
    Column(header="LAST RUN", text=lambda schedule: schedule.last_run_id or "-", priority=5),
]


def schedule_fields(
    schedule: schedules_pb2.Schedule,
) -> list[tuple[str, str] | tuple[str, str, str | None]]:
    template = schedule.template
    return [
        ("schedule", schedule.name),
        ("cron", f"{schedule.cron} ({schedule.timezone or 'UTC'})"),
        ("state", _state(schedule), _state_style(schedule)),
        ("next tick", timestamp_text(schedule.next_fire_at)),
        ("last tick", timestamp_text(schedule.last_fire_at)),
        ("runs created", str(schedule.runs_created)),
        ("last run", schedule.last_run_id or "-"),
        ("targets", "\n".join(template.targets) or "-"),
        ("sessions", str(template.sessions)),
        ("created", timestamp_text(schedule.created_at)),
    ]


def _show(
    ctx: typer.Context, schedule: schedules_pb2.Schedule, output: OutputFormat | None
) -> None:
    emit_one(
        schedule,
        output=output_format(ctx, output),
        data=message_data,
        fields=schedule_fields,
        columns=SCHEDULE_COLUMNS,
    )


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
    output: OutputOption = None,
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
    _show(ctx, schedule, output)


@app.command("ls")
@report_errors
def list_schedules(ctx: typer.Context, output: OutputOption = None) -> None:
    """List schedules with their next and last tick."""
    with open_schedules_client(ctx) as client:
        schedules = client.list_schedules()
    emit_list(
        schedules,
        columns=SCHEDULE_COLUMNS,
        output=output_format(ctx, output),
        key="schedules",
        data=message_data,
        empty='no schedules yet: smartctl schedules create NAME --cron "*/15 * * * *" -f run.yaml',
    )


@app.command("get")
@report_errors
def get_schedule(ctx: typer.Context, name: NameArgument, output: OutputOption = None) -> None:
    """Show a schedule and its run template."""
    with open_schedules_client(ctx) as client:
        schedule = client.get_schedule(name)
    _show(ctx, schedule, output)


def _set_paused(
    ctx: typer.Context, name: str, *, paused: bool, output: OutputFormat | None
) -> None:
    with open_schedules_client(ctx) as client:
        schedule = client.set_paused(name, paused=paused)
    fmt = output_format(ctx, output)
    if not fmt.is_table:
        _show(ctx, schedule, fmt)
    elif paused:
        say(f"schedule {name} is paused")
    else:
        say(f"schedule {name} is active; next tick {timestamp_text(schedule.next_fire_at)}")


@app.command("pause")
@report_errors
def pause(ctx: typer.Context, name: NameArgument, output: OutputOption = None) -> None:
    """Stop creating runs until resumed (runs already started go on)."""
    _set_paused(ctx, name, paused=True, output=output)


@app.command("resume")
@report_errors
def resume(ctx: typer.Context, name: NameArgument, output: OutputOption = None) -> None:
    """Fire again from the next tick on (ticks missed while paused are skipped)."""
    _set_paused(ctx, name, paused=False, output=output)


@app.command("delete")
@report_errors
def delete(ctx: typer.Context, name: NameArgument) -> None:
    """Delete a schedule (the runs it created stay)."""
    with open_schedules_client(ctx) as client:
        client.delete_schedule(name)
    hint(f"deleted schedule {name}")

"""`smartctl run …`: create, validate, start, get, list, watch and steer runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli._context import open_client, output_format
from cli._data import message_data
from cli._errors import CliError, report_errors
from cli._output import OutputFormat, OutputOption, debug, emit_list, emit_one, hint, say
from cli._plan_view import host_verdicts, print_plan
from cli._run_app import RunArgument, app
from cli._spec import build_spec, load_spec_document, validated_spec
from cli._text import plural
from cli._views import RUN_COLUMNS, run_fields, run_status
from cli._watch import watch_run
from services.common.durations import parse_duration
from services.scheduler._plan_summary import summarize_plan
from smartfleet.v1 import runs_pb2

SpecFileOption = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        metavar="SPEC",
        help="Run spec as YAML or JSON (${VAR} and ${VAR:-default} are read from the "
        "environment); flags override its fields.",
    ),
]
TargetsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        "-t",
        metavar="URL",
        help="Target URL (repeat for several); replaces the file's targets.",
    ),
]
SessionsOption = Annotated[
    int | None, typer.Option("--sessions", "-n", help="Total sessions (default 1).")
]
NameOption = Annotated[str | None, typer.Option("--name", help="A name for the run.")]
ConcurrencyOption = Annotated[
    int | None,
    typer.Option(
        "--concurrency", "-c", help="At most this many sessions at once (0: fleet capacity)."
    ),
]
TimeoutOption = Annotated[
    str | None,
    typer.Option("--timeout", metavar="DURATION", help="Session timeout, e.g. 30s or 2m."),
]
EngineOption = Annotated[
    str | None, typer.Option("--engine", help="chromium (default), firefox or webkit.")
]


def _spec_from(
    spec_file: Path | None,
    *,
    targets: list[str] | None,
    sessions: int | None,
    name: str | None,
    concurrency: int | None,
    timeout: str | None,
    engine: str | None,
) -> runs_pb2.RunSpec:
    document = load_spec_document(spec_file) if spec_file else None
    return build_spec(
        document=document,
        source=str(spec_file) if spec_file else "spec",
        targets=targets or (),
        sessions=sessions,
        name=name,
        concurrency=concurrency,
        timeout=timeout,
        engine=engine,
    )


def _print_dry_run(ctx: typer.Context, spec: runs_pb2.RunSpec, output: OutputFormat | None) -> None:
    """The plan, checked here; the server's allowlist verdict on each host when a gateway
    answers (CreateRun with validate_only); exit 2 when the server refuses a host."""
    checked = validated_spec(spec)
    verdicts: dict[str, str] = {}
    try:
        with open_client(ctx) as client:
            verdicts = host_verdicts(client.plan_run(spec))
    except CliError as error:
        debug(f"no allowlist verdict from a gateway: {error.message}")
    print_plan(
        summarize_plan(checked),
        name=checked.name,
        output=output_format(ctx, output),
        title=f"plan of {checked.name or 'the run'} (nothing created)",
        verdicts=verdicts,
    )
    refused = sorted(host for host, verdict in verdicts.items() if verdict != "allowed")
    if refused:
        raise CliError(f"the scheduler's allowlist refuses {', '.join(refused)}")


@app.command("create")
@report_errors
def create(
    ctx: typer.Context,
    targets: TargetsOption = None,
    sessions: SessionsOption = None,
    name: NameOption = None,
    concurrency: ConcurrencyOption = None,
    timeout: TimeoutOption = None,
    engine: EngineOption = None,
    spec_file: SpecFileOption = None,
    start: Annotated[bool, typer.Option("--start", help="Start the run at once.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan (as `run validate`); create nothing."),
    ] = False,
    output: OutputOption = None,
) -> None:
    """Create a run (a draft unless --start) and print its id."""
    spec = _spec_from(
        spec_file,
        targets=targets,
        sessions=sessions,
        name=name,
        concurrency=concurrency,
        timeout=timeout,
        engine=engine,
    )
    if dry_run:
        _print_dry_run(ctx, spec, output)
        return
    with open_client(ctx) as client:
        run = client.create_run(spec, start=start)
    fmt = output_format(ctx, output)
    if not fmt.is_table:
        # The run as `run get` shows it, plus `run_id` (what scripts read since the first -o json).
        emit_one(
            run,
            output=fmt,
            data=lambda item: {"run_id": item.id, **message_data(item)},
            fields=run_fields,
            columns=RUN_COLUMNS,
        )
        return
    # The id alone on stdout, so `RUN=$(smartctl run create …)` works; the rest is for people.
    print(run.id, flush=True)
    next_step = f"smartctl run watch {run.id}" if start else f"smartctl run start {run.id}"
    hint(
        f"created run {run.id} ({run_status(run)}, "
        f"{plural(run.spec.sessions or spec.sessions, 'session')}); "
        f"{'watch' if start else 'start'} it: {next_step}"
    )


@app.command("validate")
@report_errors
def validate(
    ctx: typer.Context,
    spec_file: SpecFileOption = None,
    targets: TargetsOption = None,
    sessions: SessionsOption = None,
    name: NameOption = None,
    concurrency: ConcurrencyOption = None,
    timeout: TimeoutOption = None,
    engine: EngineOption = None,
    output: OutputOption = None,
) -> None:
    """Check a spec and print its plan: sessions per cell and target, hosts, pacing timeline.

    Nothing is created and no gateway is needed; when one answers, it also says whether the
    scheduler's allowlist allows each host (and a refused host exits 2).
    """
    if spec_file is None and not targets:
        raise CliError("nothing to validate: pass -f SPEC (and/or --target URL)")
    spec = _spec_from(
        spec_file,
        targets=targets,
        sessions=sessions,
        name=name,
        concurrency=concurrency,
        timeout=timeout,
        engine=engine,
    )
    _print_dry_run(ctx, spec, output)


@app.command("start")
@report_errors
def start_run(ctx: typer.Context, run_id: RunArgument, output: OutputOption = None) -> None:
    """Start a draft run."""
    with open_client(ctx) as client:
        run = client.start_run(run_id)
    fmt = output_format(ctx, output)
    if not fmt.is_table:
        emit_one(run, output=fmt, data=message_data, fields=run_fields, columns=RUN_COLUMNS)
        return
    say(f"run {run.id} is {run_status(run)}; watch it: smartctl run watch {run.id}")


@app.command("get")
@report_errors
def get_run(ctx: typer.Context, run_id: RunArgument, output: OutputOption = None) -> None:
    """Show a run: spec, status and counters."""
    with open_client(ctx) as client:
        run = client.get_run(run_id)
    emit_one(
        run,
        output=output_format(ctx, output),
        data=message_data,
        fields=run_fields,
        columns=RUN_COLUMNS,
    )


@app.command("ls")
@report_errors
def list_runs(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="At most this many runs, newest first.")
    ] = 20,
    output: OutputOption = None,
) -> None:
    """List recent runs."""
    with open_client(ctx) as client:
        runs = client.list_runs(limit=limit)
    emit_list(
        runs,
        columns=RUN_COLUMNS,
        output=output_format(ctx, output),
        key="runs",
        data=message_data,
        empty="no runs yet: smartctl run create --target URL --sessions N --start",
    )


@app.command("watch")
@report_errors
def watch(
    ctx: typer.Context,
    run_id: RunArgument,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            metavar="DURATION",
            help="Give up after this long (e.g. 10m), exit code 2; the run goes on.",
        ),
    ] = None,
    wait_start: Annotated[
        bool,
        typer.Option("--wait-start", help="On a draft, wait for someone to start it."),
    ] = False,
    output: OutputOption = None,
) -> None:
    """Follow a run to its end, then summarise it (outcomes, top failure reasons, percentiles).

    Exit code 0 when the run completed with every session ok, 1 when it completed with
    failed sessions, 2 when it was cancelled or failed, is a draft (without --wait-start),
    the --timeout passed, or on error.
    """
    limit = None
    if timeout is not None:
        try:
            limit = parse_duration(timeout)
        except ValueError as error:
            raise CliError(f"--timeout: {error}") from error
        if limit.total_seconds() <= 0:
            raise CliError(f"--timeout: must be positive, got {timeout!r}")
    with open_client(ctx) as client:
        code = watch_run(
            client, run_id, output=output_format(ctx, output), timeout=limit, wait_start=wait_start
        )
    raise typer.Exit(code)


def _lifecycle(ctx: typer.Context, run_id: str, output: OutputFormat | None, verb: str) -> None:
    with open_client(ctx) as client:
        run = getattr(client, f"{verb}_run")(run_id)
    fmt = output_format(ctx, output)
    if not fmt.is_table:
        emit_one(run, output=fmt, data=message_data, fields=run_fields, columns=RUN_COLUMNS)
        return
    say(f"run {run.id} is {run_status(run)}")


@app.command("pause")
@report_errors
def pause(ctx: typer.Context, run_id: RunArgument, output: OutputOption = None) -> None:
    """Stop dispatching new sessions; sessions already running finish."""
    _lifecycle(ctx, run_id, output, "pause")


@app.command("resume")
@report_errors
def resume(ctx: typer.Context, run_id: RunArgument, output: OutputOption = None) -> None:
    """Dispatch again after a pause."""
    _lifecycle(ctx, run_id, output, "resume")


@app.command("cancel")
@report_errors
def cancel(ctx: typer.Context, run_id: RunArgument, output: OutputOption = None) -> None:
    """End the run now: queued sessions are dropped, running ones aborted; results are kept."""
    _lifecycle(ctx, run_id, output, "cancel")


@app.command("expedite")
@report_errors
def expedite(ctx: typer.Context, run_id: RunArgument, output: OutputOption = None) -> None:
    """Start every remaining session now, regardless of the pacing plan."""
    _lifecycle(ctx, run_id, output, "expedite")

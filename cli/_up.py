"""`smartctl up`: the whole stack on this machine, supervised until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli._config import stack_file
from cli._context import global_options
from cli._errors import CliError, err_console, report_errors
from cli._output import console, print_fields
from cli._stack import (
    DEFAULT_GATEWAY_PORT,
    DEFAULT_NATS_PORT,
    DEFAULT_SCHEDULER_PORT,
    Stack,
    StackInfo,
    tail,
)

# A service that exits more often than this within the window is not restarted again.
MAX_RESTARTS = 3
RESTART_WINDOW = timedelta(minutes=5)


def up(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Database, NATS store, artifacts, logs and stack.json. \\[default: global --data-dir]",
        ),
    ] = None,
    gateway_port: Annotated[
        int | None,
        typer.Option(
            "--gateway-port",
            min=0,
            max=65535,
            help=f"Public Fleet API port (0: any free port). \\[default: {DEFAULT_GATEWAY_PORT}, "
            "or a free port when that one is taken]",
            show_default=False,
        ),
    ] = None,
    scheduler_port: Annotated[
        int | None,
        typer.Option(
            "--scheduler-port",
            min=0,
            max=65535,
            help=f"Scheduler port (0: any free port). \\[default: {DEFAULT_SCHEDULER_PORT}, "
            "or a free port when that one is taken]",
            show_default=False,
        ),
    ] = None,
    nats_port: Annotated[
        int | None,
        typer.Option(
            "--nats-port",
            min=0,
            max=65535,
            help=f"NATS port (0: any free port). \\[default: {DEFAULT_NATS_PORT}, or a free port "
            "when that one is taken]",
            show_default=False,
        ),
    ] = None,
    nodes: Annotated[
        int, typer.Option("--nodes", min=1, max=32, help="How many local browser nodes.")
    ] = 1,
    slots: Annotated[
        int,
        typer.Option(
            "--slots", min=0, help="Sessions each local node runs at once (0: from CPUs)."
        ),
    ] = 0,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="postgresql+asyncpg://user@host/db instead of the SQLite file in the data dir.",
        ),
    ] = None,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            "--allowed-hosts",
            help="Hosts runs may target besides loopback, comma-separated (*.example.com too).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Bearer token the gateway accepts (default: the global --token, else a new random one).",
        ),
    ] = None,
    start_timeout: Annotated[
        int, typer.Option("--start-timeout", min=1, help="Seconds each service may take to start.")
    ] = 90,
) -> None:
    """Start NATS, the scheduler, the gateway and browser nodes here; Ctrl-C stops them.

    A default port that is taken (another stack, say) is replaced by a free one, and `up`
    prints where everything listens. A port given explicitly must be free.
    """
    options = global_options(ctx)
    stack = Stack(
        data_dir=data_dir or options.data_dir,
        gateway_port=DEFAULT_GATEWAY_PORT if gateway_port is None else gateway_port,
        scheduler_port=DEFAULT_SCHEDULER_PORT if scheduler_port is None else scheduler_port,
        nats_port=DEFAULT_NATS_PORT if nats_port is None else nats_port,
        # Only defaults give way; a port the user chose is theirs or an error.
        free_ports=[
            name
            for name, given in (
                ("gateway", gateway_port),
                ("scheduler", scheduler_port),
                ("nats", nats_port),
            )
            if given is None
        ],
        nodes=nodes,
        database_url=database_url,
        allowed_hosts=allowed_hosts,
        node_slots=slots,
        token=token or options.token,
        start_timeout=timedelta(seconds=start_timeout),
    )
    code = _run_reporting(stack)
    raise typer.Exit(code)


@report_errors
def _run_reporting(stack: Stack) -> int:
    return asyncio.run(_supervise(stack))


async def _supervise(stack: Stack) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    try:
        err_console.print(f"starting the stack in {escape(str(stack.data_dir))} …")
        starting = asyncio.ensure_future(stack.start())
        waiting = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not starting.done():
            starting.cancel()  # start() stops whatever it had started
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            err_console.print("interrupted while starting; stopped")
            return 130
        info = starting.result()  # a StackError here: start() has already cleaned up
        _print_ready(stack, info)
        try:
            code = await _watch_services(stack, stopping)
        finally:
            err_console.print("stopping: node, gateway, scheduler, NATS …")
            await stack.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    err_console.print("stopped")
    return code


async def _watch_services(stack: Stack, stopping: asyncio.Event) -> int:
    """Restart a service that exits on its own, unless it keeps doing so; 0 after Ctrl-C."""
    restarts: dict[str, list[float]] = {}
    while True:
        exited = asyncio.ensure_future(stack.wait_for_exit())
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        if stop.done():
            exited.cancel()
            return 0
        stop.cancel()
        name = exited.result()
        log = stack.log_path(name)
        err_console.print(
            f"[red]{name} exited with code {stack.exit_code(name)}[/]; last lines of {escape(str(log))}:\n"
            f"{escape(tail(log, lines=10))}"
        )
        now = time.monotonic()
        recent = [t for t in restarts.get(name, []) if now - t < RESTART_WINDOW.total_seconds()]
        if len(recent) >= MAX_RESTARTS:
            err_console.print(f"[red]{name} keeps exiting; giving up[/]")
            return 1
        restarts[name] = [*recent, now]
        await asyncio.sleep(min(2 ** len(recent), 10))
        if stopping.is_set():
            return 0
        try:
            await stack.restart(name)
        except CliError as error:
            err_console.print(f"[red]restarting {name} failed:[/] {escape(error.message)}")
            return 1
        err_console.print(f"{name} restarted")


def _print_ready(stack: Stack, info: StackInfo) -> None:
    rows: list[tuple[str, str] | tuple[str, str, str | None]] = [
        ("gateway", f"{info.gateway}  (public Fleet API, gRPC)"),
        ("scheduler", info.scheduler),
    ]
    for key, node_id in zip(stack.node_keys, info.node_ids, strict=True):
        rows.append((key, f"{node_id}  (pid {info.pids.get(key, '?')})"))
    rows += [
        ("nats", info.nats_url),
        ("database", _without_password(info.database_url)),
        ("artifacts", info.artifact_dir),
        ("logs", str(stack.data_dir / "logs")),
        ("token", info.token),
    ]
    for note in stack.port_notes:
        console.print(f"[yellow]{escape(note)}[/]")
    console.print("[bold green]Smartfleet is up[/]")
    print_fields(rows)
    console.print(
        f"\nsmartctl reads the gateway and token from {escape(str(stack_file(stack.data_dir)))}, e.g.\n"
        "  smartctl run create --target http://127.0.0.1:8080/ --sessions 10 --start\n"
        "  smartctl run watch RUN\n"
        "From elsewhere:\n"
        f"  export SMARTFLEET_GATEWAY_ADDR={info.gateway} SMARTFLEET_TOKEN={info.token}\n"
        "Ctrl-C stops everything.",
        soft_wrap=True,
    )


def _without_password(url: str) -> str:
    """A database URL fit to print: the password, if any, masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is the scheduler's to report
        return url

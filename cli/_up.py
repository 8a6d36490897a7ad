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
from rich.table import Table

from cli._config import stack_file
from cli._context import global_options
from cli._errors import CliError, err_console, report_errors
from cli._output import console
from cli._stack import ServiceName, Stack, StackInfo, tail

# A service that exits more often than this within the window is not restarted again.
MAX_RESTARTS = 3
RESTART_WINDOW = timedelta(minutes=5)


def up(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Database, NATS store, logs and stack.json. [default: global --data-dir]",
        ),
    ] = None,
    gateway_port: Annotated[
        int,
        typer.Option(
            "--gateway-port", min=0, max=65535, help="Public Fleet API port (0: any free port)."
        ),
    ] = 50051,
    scheduler_port: Annotated[
        int,
        typer.Option(
            "--scheduler-port", min=0, max=65535, help="Scheduler port (0: any free port)."
        ),
    ] = 50052,
    slots: Annotated[
        int,
        typer.Option("--slots", min=0, help="Sessions the local node runs at once (0: from CPUs)."),
    ] = 0,
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
    """Start NATS, the scheduler, the gateway and a browser node here; Ctrl-C stops them."""
    options = global_options(ctx)
    stack = Stack(
        data_dir=data_dir or options.data_dir,
        gateway_port=gateway_port,
        scheduler_port=scheduler_port,
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
    restarts: dict[ServiceName, list[float]] = {}
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
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("gateway", f"{info.gateway}  [dim](public Fleet API, gRPC)[/]")
    table.add_row("scheduler", info.scheduler)
    table.add_row("node", f"{info.node_id}  [dim](pid {info.pids.get('node', '?')})[/]")
    table.add_row("nats", info.nats_url)
    table.add_row("database", info.database_url)
    table.add_row("logs", str(stack.data_dir / "logs"))
    table.add_row("token", info.token)
    console.print("[bold green]Smartfleet is up[/]")
    console.print(table)
    console.print(
        f"\nsmartctl reads the gateway and token from {escape(str(stack_file(stack.data_dir)))}, e.g.\n"
        "  smartctl run create --target http://127.0.0.1:8080/ --sessions 10 --start\n"
        "  smartctl run watch RUN\n"
        "From elsewhere:\n"
        f"  export SMARTFLEET_GATEWAY_ADDR={info.gateway} SMARTFLEET_TOKEN={info.token}\n"
        "Ctrl-C stops everything.",
        soft_wrap=True,
    )

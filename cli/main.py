"""`smartctl`: drive a Smartfleet fleet (runs, nodes) and run its services.

Commands that talk to the fleet find the gateway in this order: --gateway/--token (or
SMARTFLEET_GATEWAY_ADDR/SMARTFLEET_TOKEN), then <data-dir>/stack.json written by `smartctl up`.
"""

from __future__ import annotations

import signal
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer

from cli import _accounts, _db, _hosts, _nodes, _runs, _schedules, _serve
from cli._config import DEFAULT_DATA_DIR
from cli._context import GlobalOptions
from cli._up import up

app = typer.Typer(
    name="smartctl",
    help="Smartfleet: real-browser sessions at fleet scale.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(_runs.app, name="run")
app.add_typer(_nodes.app, name="nodes")
app.add_typer(_hosts.app, name="hosts")
app.add_typer(_accounts.app, name="accounts")
app.add_typer(_schedules.app, name="schedules")
app.add_typer(_serve.scheduler_app, name="scheduler")
app.add_typer(_serve.node_app, name="node")
app.add_typer(_serve.gateway_app, name="gateway")
app.add_typer(_db.app, name="db")
app.command("up")(up)


def _print_version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"smartctl {version('smartfleet')}")
        except PackageNotFoundError:
            typer.echo("smartctl (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway", envvar="SMARTFLEET_GATEWAY_ADDR", help="The gateway's HOST:PORT."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="SMARTFLEET_TOKEN",
            help="Bearer token for the gateway.",
            show_envvar=True,
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            envvar="SMARTFLEET_DATA_DIR",
            help="Where `smartctl up` keeps its state and stack.json.",
        ),
    ] = Path(DEFAULT_DATA_DIR),
    rpc_timeout: Annotated[
        float, typer.Option("--rpc-timeout", min=0.1, help="Seconds to wait for each API call.")
    ] = 15.0,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Smartfleet: real-browser sessions at fleet scale."""
    ctx.obj = GlobalOptions(
        gateway=gateway, token=token, data_dir=data_dir, rpc_timeout=rpc_timeout
    )


@app.command("demo-site")
def demo_site(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port).")
    ] = 8080,
) -> None:
    """Serve the demo site (pages, a redirect chain, a slow page, errors); prints its URL."""
    from demo.site import serve_forever

    # SIGTERM ends it as cleanly as Ctrl-C (scripts stop background jobs with TERM).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    serve_forever(host=host, port=port)


if __name__ == "__main__":
    app()

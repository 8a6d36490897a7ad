"""`smartctl`: drive a Smartfleet fleet (runs, nodes) and run its services.

Commands that talk to the fleet find the gateway in this order: --gateway/--token flags, then
SMARTFLEET_GATEWAY_ADDR/SMARTFLEET_TOKEN, then the context of the CLI profile
($XDG_CONFIG_HOME/smartfleet/config.yaml, `smartctl config`), then <data-dir>/stack.json
written by `smartctl up`.
"""

from __future__ import annotations

import os
import platform
import signal
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer

# `run --help` lists the commands in import order: create, validate, … before the exports.
from cli import _runs

# isort: split
from cli import (
    _accounts,
    _db,
    _help,
    _hosts,
    _nodes,
    _profile_cmd,
    _report,
    _run_data,
    _schedules,
    _serve,
)
from cli._config import DEFAULT_DATA_DIR
from cli._context import GlobalOptions, open_client, output_format
from cli._errors import CliError, err_console, report_errors
from cli._output import (
    UI,
    Column,
    OutputFormat,
    OutputOption,
    console,
    emit_list,
    print_json,
    print_jsonl,
    print_yaml,
    say,
)
from cli._run_app import app as run_app
from cli._schema import run_spec_schema_text
from cli._up import up
from smartfleet.v1 import nodes_pb2

_help.install()
assert _runs and _run_data and _report  # their commands register on the `run` group

app = typer.Typer(
    name="smartctl",
    help="Smartfleet: real-browser sessions at fleet scale.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(run_app, name="run")
app.add_typer(_nodes.app, name="nodes")
app.add_typer(_hosts.app, name="hosts")
app.add_typer(_accounts.app, name="accounts")
app.add_typer(_schedules.app, name="schedules")
app.add_typer(_profile_cmd.app, name="config")
spec_app = typer.Typer(help="The run spec format.", no_args_is_help=True)
app.add_typer(spec_app, name="spec")
app.add_typer(_serve.scheduler_app, name="scheduler")
app.add_typer(_serve.node_app, name="node")
app.add_typer(_serve.gateway_app, name="gateway")
app.add_typer(_db.app, name="db")
app.command("up")(up)


def cli_version() -> str:
    try:
        return version("smartfleet")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"smartctl {cli_version()}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            envvar="SMARTFLEET_GATEWAY_ADDR",
            show_envvar=True,
            help="The gateway's HOST:PORT.",
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
    ca_file: Annotated[
        str | None,
        typer.Option(
            "--ca-file",
            envvar="SMARTFLEET_CA_FILE",
            show_envvar=True,
            help="CA certificate (PEM) to talk TLS to the gateway.",
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            envvar="SMARTFLEET_CONTEXT",
            show_envvar=True,
            help="A context of the CLI profile instead of the current one (`smartctl config ls`).",
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            envvar="SMARTFLEET_DATA_DIR",
            show_envvar=True,
            help="Where `smartctl up` keeps its state and stack.json.",
        ),
    ] = Path(DEFAULT_DATA_DIR),
    rpc_timeout: Annotated[
        float, typer.Option("--rpc-timeout", min=0.1, help="Seconds to wait for each API call.")
    ] = 15.0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only results: no hints, no progress bars.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Also say which gateway is used and how long each call took."
        ),
    ] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="No colours (also: the NO_COLOR variable).")
    ] = False,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Smartfleet: real-browser sessions at fleet scale."""
    UI.quiet, UI.verbose = quiet, verbose and not quiet
    colorless = no_color or bool(os.environ.get("NO_COLOR"))
    console.no_color = err_console.no_color = colorless
    ctx.obj = GlobalOptions(
        gateway=gateway,
        token=token,
        ca_file=ca_file,
        context=context,
        data_dir=data_dir,
        rpc_timeout=rpc_timeout,
    )


@app.command("version")
@report_errors
def show_version(
    ctx: typer.Context,
    client_only: Annotated[
        bool, typer.Option("--client", help="Only this CLI's version; ask no gateway.")
    ] = False,
    output: OutputOption = None,
) -> None:
    """This CLI's version, the gateway's and scheduler's (GetServerInfo), and the versions of
    the browser nodes the gateway knows."""
    fmt = output_format(ctx, output)
    client: dict[str, Any] = {"version": cli_version(), "python": platform.python_version()}
    nodes: list[nodes_pb2.Node] = []
    servers: list[Any] = []
    problem = ""
    if not client_only:
        try:
            with open_client(ctx) as fleet:
                servers = fleet.server_info()
                nodes = fleet.list_nodes()
        except CliError as error:
            problem = error.message
    if not fmt.is_table:
        data = {
            "client": client,
            "servers": None
            if client_only
            else [{"name": c.name, "version": c.version, "address": c.address} for c in servers],
            "nodes": [
                {
                    "node_id": node.info.node_id,
                    "version": node.info.version,
                    "playwright_version": node.info.playwright_version,
                    "browser_versions": dict(node.info.browser_versions),
                }
                for node in nodes
            ],
        }
        if fmt is OutputFormat.yaml:
            print_yaml(data)
        elif fmt is OutputFormat.jsonl:
            print_jsonl([data])
        else:
            print_json(data)  # csv too: a client and its nodes are not one table
    else:
        say(f"client: smartctl {client['version']} (Python {client['python']})")
        if not client_only and not problem:
            for component in servers:
                say(f"{component.name}: {component.version} at {component.address}")
            columns: list[Column[nodes_pb2.Node]] = [
                Column(header="NODE", text=lambda node: node.info.node_id),
                Column(header="VERSION", text=lambda node: node.info.version or "-"),
                Column(header="PLAYWRIGHT", text=lambda node: node.info.playwright_version or "-"),
                Column(
                    header="BROWSER",
                    text=lambda node: ", ".join(
                        f"{engine} {value}" for engine, value in sorted(node.info.browser_versions.items())
                    ) or "-",
                    wrap=12,
                ),
            ]  # fmt: skip
            emit_list(nodes, columns=columns, output=fmt, key="nodes", data=lambda n: n,
                      empty="nodes: none registered")  # fmt: skip
    if problem:
        raise CliError(f"cannot ask the gateway for versions: {problem}")


@spec_app.command("schema")
@report_errors
def spec_schema(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write it to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of run spec files (for editors; docs/run-spec.schema.json)."""
    text = run_spec_schema_text()
    if out is None:
        console.file.write(text)
        return
    out.write_text(text, encoding="utf-8")
    err_console.print(f"wrote {out}", markup=False)


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

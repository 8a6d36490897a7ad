"""`smartctl hosts …`: target hosts the fleet is backing off from after errors."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from cli._context import open_client
from cli._errors import report_errors
from cli._output import OutputFormat, console, hosts_table, message_dict, print_json

app = typer.Typer(help="Target hosts and their error backoff.", no_args_is_help=True)


@app.command("ls")
@report_errors
def list_hosts(
    ctx: typer.Context,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.table,
) -> None:
    """Hosts with recent errors and how long sessions against them wait."""
    with open_client(ctx) as client:
        hosts = client.list_hosts()
    if output is OutputFormat.json:
        print_json({"hosts": [message_dict(host) for host in hosts]})
        return
    if not hosts:
        console.print("no host is backing off")
        return
    console.print(hosts_table(hosts))


@app.command("reset-backoff")
@report_errors
def reset_backoff(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Argument(metavar="HOST", help="An origin (https://shop.example.com) or a host name."),
    ],
) -> None:
    """End a target's error backoff now (after fixing the site, say): an origin
    (http://127.0.0.1:8080) or a host name (every origin of that host)."""
    with open_client(ctx) as client:
        states = client.reset_host_backoff(host)
    for state in states:
        console.print(f"{escape(state.host)}: backoff reset")

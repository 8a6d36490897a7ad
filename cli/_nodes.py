"""`smartctl nodes …`: the browser nodes the scheduler knows."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._context import open_client
from cli._errors import report_errors
from cli._output import OutputFormat, console, message_dict, nodes_table, print_json

app = typer.Typer(help="Inspect browser nodes.", no_args_is_help=True)


@app.command("ls")
@report_errors
def list_nodes(
    ctx: typer.Context,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="table for people, json for programs.")
    ] = OutputFormat.table,
) -> None:
    """List browser nodes with their state, slots and load."""
    with open_client(ctx) as client:
        nodes = client.list_nodes()
    if output is OutputFormat.json:
        print_json({"nodes": [message_dict(node) for node in nodes]})
        return
    if not nodes:
        console.print(
            "no browser nodes registered: start one with `smartctl node serve` (or `smartctl up`)"
        )
        return
    console.print(nodes_table(nodes))

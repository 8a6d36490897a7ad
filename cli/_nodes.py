"""`smartctl nodes …`: the browser nodes the scheduler knows."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from cli._context import open_client
from cli._errors import report_errors
from cli._output import (
    OutputFormat,
    console,
    message_dict,
    node_state,
    nodes_table,
    print_json,
)

app = typer.Typer(help="Inspect, cordon and drain browser nodes.", no_args_is_help=True)

NodeArgument = Annotated[str, typer.Argument(help="The node's id (see `smartctl nodes ls`).")]
OutputOption = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people, json for programs.")
]


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


def _hold(ctx: typer.Context, node_id: str, output: OutputFormat, verb: str) -> None:
    with open_client(ctx) as client:
        node = getattr(client, f"{verb}_node")(node_id)
    if output is OutputFormat.json:
        print_json(message_dict(node))
        return
    console.print(f"node {escape(node.info.node_id)} is {node_state(node)}")


@app.command("cordon")
@report_errors
def cordon(
    ctx: typer.Context, node_id: NodeArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Take no new jobs on the node; its running sessions go on. Undo with `uncordon`."""
    _hold(ctx, node_id, output, "cordon")


@app.command("drain")
@report_errors
def drain(
    ctx: typer.Context, node_id: NodeArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Take no new jobs, let the running sessions finish; the node then reports `drained`."""
    _hold(ctx, node_id, output, "drain")


@app.command("uncordon")
@report_errors
def uncordon(
    ctx: typer.Context, node_id: NodeArgument, output: OutputOption = OutputFormat.table
) -> None:
    """Let a cordoned, draining or drained node take jobs again."""
    _hold(ctx, node_id, output, "uncordon")

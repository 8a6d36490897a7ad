"""`smartctl nodes …`: the browser nodes the scheduler knows."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._context import open_client, output_format
from cli._data import message_data
from cli._errors import report_errors
from cli._output import OutputFormat, OutputOption, emit_list, emit_one, say
from cli._views import node_columns, node_state
from smartfleet.v1 import nodes_pb2

app = typer.Typer(help="Inspect, cordon and drain browser nodes.", no_args_is_help=True)

NodeArgument = Annotated[str, typer.Argument(help="The node's id (see `smartctl nodes ls`).")]


@app.command("ls")
@report_errors
def list_nodes(ctx: typer.Context, output: OutputOption = None) -> None:
    """List browser nodes with their state, slots and load."""
    with open_client(ctx) as client:
        nodes = client.list_nodes()
    emit_list(
        nodes,
        columns=node_columns(),
        output=output_format(ctx, output),
        key="nodes",
        data=message_data,
        empty="no browser nodes registered: start one with `smartctl node serve` "
        "(or `smartctl up`)",
    )


def node_fields(node: nodes_pb2.Node) -> list[tuple[str, str]]:
    return [(column.header.lower(), column.text(node)) for column in node_columns()]


def _hold(ctx: typer.Context, node_id: str, output: OutputFormat | None, verb: str) -> None:
    with open_client(ctx) as client:
        node = getattr(client, f"{verb}_node")(node_id)
    fmt = output_format(ctx, output)
    if not fmt.is_table:
        emit_one(node, output=fmt, data=message_data, fields=node_fields, columns=node_columns())
        return
    say(f"node {node.info.node_id} is {node_state(node)}")


@app.command("cordon")
@report_errors
def cordon(ctx: typer.Context, node_id: NodeArgument, output: OutputOption = None) -> None:
    """Take no new jobs on the node; its running sessions go on. Undo with `uncordon`."""
    _hold(ctx, node_id, output, "cordon")


@app.command("drain")
@report_errors
def drain(ctx: typer.Context, node_id: NodeArgument, output: OutputOption = None) -> None:
    """Take no new jobs, let the running sessions finish; the node then reports `drained`."""
    _hold(ctx, node_id, output, "drain")


@app.command("uncordon")
@report_errors
def uncordon(ctx: typer.Context, node_id: NodeArgument, output: OutputOption = None) -> None:
    """Let a cordoned, draining or drained node take jobs again."""
    _hold(ctx, node_id, output, "uncordon")

"""`smartctl hosts …`: target hosts the fleet is backing off from after errors."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._context import open_client, output_format
from cli._data import message_data
from cli._errors import report_errors
from cli._output import OutputOption, emit_list, say
from cli._views import HOST_COLUMNS

app = typer.Typer(help="Target hosts and their error backoff.", no_args_is_help=True)


@app.command("ls")
@report_errors
def list_hosts(ctx: typer.Context, output: OutputOption = None) -> None:
    """Hosts with recent errors and how long sessions against them wait."""
    with open_client(ctx) as client:
        hosts = client.list_hosts()
    emit_list(
        hosts,
        columns=HOST_COLUMNS,
        output=output_format(ctx, output),
        key="hosts",
        data=message_data,
        empty="no host is backing off",
    )


@app.command("reset-backoff")
@report_errors
def reset_backoff(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Argument(
            metavar="HOST",
            help="An origin (https://shop.example.com) or a host name (all its origins).",
        ),
    ],
    output: OutputOption = None,
) -> None:
    """End a target's error backoff now (after fixing the site, say): an origin, or a host
    name for every origin of that host. A target that never erred is an error."""
    with open_client(ctx) as client:
        states = client.reset_host_backoff(host)
    fmt = output_format(ctx, output)
    if not fmt.is_table:
        emit_list(
            states,
            columns=HOST_COLUMNS,
            output=fmt,
            key="reset",
            data=message_data,
        )
        return
    for state in states:
        say(f"{state.host}: backoff reset")

"""The global options (`smartctl --gateway … --context … -q -v …`) handed to every command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from cli._client import FleetClient
from cli._config import DEFAULT_DATA_DIR, Connection, resolve_connection
from cli._errors import CliError
from cli._output import OutputFormat, debug
from cli._profile import load_profile


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalOptions:
    gateway: str | None = None
    token: str | None = None
    ca_file: str | None = None
    context: str | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    rpc_timeout: float = 15.0


def global_options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    options = root.obj
    return options if isinstance(options, GlobalOptions) else GlobalOptions()


def connection_for(ctx: typer.Context) -> Connection:
    """flags > env > the profile's context > the local stack's stack.json."""
    options = global_options(ctx)
    chosen = load_profile().context(options.context)
    name, context = chosen if chosen else ("", None)
    connection = resolve_connection(
        gateway=options.gateway,
        token=options.token,
        data_dir=options.data_dir,
        timeout=options.rpc_timeout,
        ca_file=options.ca_file,
        context=context,
        context_name=name,
    )
    debug(
        f"gateway {connection.gateway} (from {connection.source}), "
        f"{'TLS' if connection.ca_file else 'plaintext'}, token {'set' if connection.token else 'none'}"
    )
    return connection


def open_client(ctx: typer.Context) -> FleetClient:
    """A client for the gateway the flags, env, context or local stack name."""
    return FleetClient(connection_for(ctx))


def output_format(ctx: typer.Context, given: OutputFormat | None) -> OutputFormat:
    """-o when given, else the context's default output, else table."""
    if given is not None:
        return given
    options = global_options(ctx)
    try:
        chosen = load_profile().context(options.context)
    except CliError:
        chosen = None  # reported when the command connects
    if chosen and chosen[1].output:
        try:
            return OutputFormat(chosen[1].output)
        except ValueError:
            raise CliError(
                f"context {chosen[0]}: output {chosen[1].output!r} is not one of "
                f"{', '.join(f.value for f in OutputFormat)}"
            ) from None
    return OutputFormat.table

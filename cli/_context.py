"""The global options (`smartctl --gateway … --token … --data-dir …`) handed to every command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from cli._client import FleetClient
from cli._config import DEFAULT_DATA_DIR, resolve_connection


@dataclass(frozen=True, slots=True, kw_only=True)
class GlobalOptions:
    gateway: str | None = None
    token: str | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    rpc_timeout: float = 15.0


def global_options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    options = root.obj
    return options if isinstance(options, GlobalOptions) else GlobalOptions()


def open_client(ctx: typer.Context) -> FleetClient:
    """A client for the gateway named by the flags/env, or by the local stack's stack.json."""
    options = global_options(ctx)
    connection = resolve_connection(
        gateway=options.gateway,
        token=options.token,
        data_dir=options.data_dir,
        timeout=options.rpc_timeout,
    )
    return FleetClient(connection)

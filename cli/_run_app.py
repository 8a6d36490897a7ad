"""The `smartctl run` command group; its commands live in _runs, _run_data and _report."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Create, start, inspect and watch runs.", no_args_is_help=True)

RunArgument = Annotated[str, typer.Argument(metavar="RUN", help="The run id.")]

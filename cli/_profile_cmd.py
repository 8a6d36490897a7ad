"""`smartctl config …`: contexts in the CLI profile file, like kubectl's."""

from __future__ import annotations

from typing import Annotated

import typer

from cli._context import output_format
from cli._errors import CliError, report_errors
from cli._output import Column, OutputFormat, OutputOption, emit_list, hint, say
from cli._profile import Context, load_profile, profile_path, save_profile

app = typer.Typer(
    help="CLI contexts (gateway, token file, CA file, default output) in "
    "$XDG_CONFIG_HOME/smartfleet/config.yaml.",
    no_args_is_help=True,
)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The context's name.")]


@app.command("ls")
@report_errors
def list_contexts(ctx: typer.Context, output: OutputOption = None) -> None:
    """List contexts; * marks the current one."""
    profile = load_profile()
    current = profile.current_context
    rows = sorted(profile.contexts.items())
    columns: list[Column[tuple[str, Context]]] = [
        Column(header="CURRENT", text=lambda row: "*" if row[0] == current else "",
               value=lambda row: row[0] == current),
        Column(header="NAME", text=lambda row: row[0]),
        Column(header="GATEWAY", text=lambda row: row[1].gateway or "-"),
        Column(header="TOKEN FILE", text=lambda row: row[1].token_file or "-", wrap=16, priority=1),
        Column(header="CA FILE", text=lambda row: row[1].ca_file or "-", wrap=16, priority=2),
        Column(header="OUTPUT", text=lambda row: row[1].output or "-", priority=3),
    ]  # fmt: skip
    emit_list(
        rows,
        columns=columns,
        output=output_format(ctx, output),
        key="contexts",
        data=lambda row: {
            "name": row[0],
            "current": row[0] == current,
            "gateway": row[1].gateway,
            "token_file": row[1].token_file,
            "ca_file": row[1].ca_file,
            "output": row[1].output,
        },
        empty=f"no contexts in {profile_path()}: "
        "smartctl config set-context NAME --gateway HOST:PORT --token-file FILE",
    )


@app.command("use")
@report_errors
def use_context(name: NameArgument) -> None:
    """Make NAME the current context."""
    profile = load_profile()
    profile.context(name)  # an unknown name is an error listing the known ones
    profile.current_context = name
    save_profile(profile)
    say(f"current context: {name}")


@app.command("current")
@report_errors
def current_context() -> None:
    """Print the current context's name."""
    name = load_profile().current_context
    if not name:
        raise CliError("no current context: smartctl config use NAME")
    say(name)


@app.command("set-context")
@report_errors
def set_context(
    name: NameArgument,
    gateway: Annotated[
        str | None, typer.Option("--gateway", help="The gateway's HOST:PORT.")
    ] = None,
    token_file: Annotated[
        str | None, typer.Option("--token-file", help="A file holding the bearer token.")
    ] = None,
    ca_file: Annotated[
        str | None, typer.Option("--ca-file", help="CA certificate (PEM): talk TLS to the gateway.")
    ] = None,
    output: Annotated[
        OutputFormat | None, typer.Option("--output", "-o", help="Default -o for this context.")
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Also make it the current context.")] = False,
) -> None:
    """Create or change a context; only the options given change."""
    profile = load_profile()
    context = profile.contexts.setdefault(name, Context())
    if gateway is not None:
        context.gateway = gateway
    if token_file is not None:
        context.token_file = token_file
    if ca_file is not None:
        context.ca_file = ca_file
    if output is not None:
        context.output = output.value
    if not context.gateway:
        raise CliError(f"context {name} needs a gateway: pass --gateway HOST:PORT")
    if use or not profile.current_context:
        profile.current_context = name
    path = save_profile(profile)
    hint(
        f"context {name} saved in {path}"
        + (" (current)" if profile.current_context == name else "")
    )


@app.command("delete-context")
@report_errors
def delete_context(name: NameArgument) -> None:
    """Remove a context."""
    profile = load_profile()
    profile.context(name)
    del profile.contexts[name]
    if profile.current_context == name:
        profile.current_context = ""
    save_profile(profile)
    hint(f"deleted context {name}")

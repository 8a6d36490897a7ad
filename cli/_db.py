"""`smartctl db upgrade|current`: the scheduler's database schema (Alembic migrations).

Like `smartctl scheduler serve`, these open the database itself, not the gateway: run them where
the scheduler's database is reachable. `smartctl up` needs neither: its scheduler upgrades at start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from cli._config import read_stack_file, stack_file
from cli._context import global_options
from cli._errors import CliError, report_errors
from cli._output import OutputFormat, console, print_json
from cli._stack import stack_database_url
from services.common.config import SchedulerSettings

app = typer.Typer(help="The scheduler's database: schema migrations.", no_args_is_help=True)

T = TypeVar("T")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="SMARTFLEET_DATABASE_URL",
        help="sqlite+aiosqlite:///path.db or postgresql+asyncpg://…; default: the local stack's "
        "database in --data-dir if it has one, else the scheduler's default (smartfleet.db here). "
        "[env SMARTFLEET_DATABASE_URL]",
        show_envvar=False,
    ),
]


def resolve_database_url(*, given: str | None, data_dir: Path) -> tuple[str, str]:
    """(URL, where it came from): the flag/env, then the local stack's, then the scheduler's default."""
    if given:
        return given, "--database-url"
    stack = read_stack_file(data_dir)
    if stack and stack.get("database_url"):
        return str(stack["database_url"]), str(stack_file(data_dir))
    if (data_dir / "smartfleet.db").exists():
        return stack_database_url(data_dir), f"the local stack's, in {data_dir}"
    default = SchedulerSettings.model_fields["database_url"].default
    return str(default), "the scheduler's default"


def _run(work: Coroutine[Any, Any, T], *, url: str) -> T:
    # Imported here: `smartctl --help` and the gateway commands need neither Alembic nor SQLAlchemy.
    from alembic.util import CommandError
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from services.common.errors import SmartfleetError
    from services.scheduler._migrate import display_url

    try:
        return asyncio.run(work)
    except SmartfleetError as error:
        raise CliError(error.message) from error
    except (SQLAlchemyError, CommandError, OSError) as error:
        # The driver's own words, without SQLAlchemy's "(module.Error)" prefix and trailer.
        cause = error.orig if isinstance(error, DBAPIError) and error.orig else error
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise CliError(f"database {display_url(url)}: {reason}") from error


def _fields(rows: list[tuple[str, str]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


@app.command("upgrade")
@report_errors
def upgrade(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    revision: Annotated[
        str, typer.Option("--revision", help="The revision to upgrade to (an id, or head).")
    ] = "head",
) -> None:
    """Upgrade the schema (keeping every row); adopts a database made before migrations."""
    from services.scheduler import _migrate

    url, source = resolve_database_url(given=database_url, data_dir=global_options(ctx).data_dir)
    result = _run(_migrate.upgrade(url, revision=revision), url=url)
    head = _migrate.head()
    reached = f"{result.after}{' (head)' if result.after == head else ''}"
    rows = [("database", f"{escape(_migrate.display_url(url))}  [dim]({escape(source)})[/]")]
    if result.adopted:
        made = "; ".join([*result.repairs, f"stamped {_migrate.BASELINE}"])
        rows.append(("adopted", f"made before migrations: {escape(made)}"))
    if result.before == result.after and not result.adopted:
        rows.append(("revision", f"{escape(reached)}, already up to date"))
    else:
        rows.append(("revision", f"{escape(result.before or 'none')} → {escape(reached)}"))
    console.print(_fields(rows))


@app.command("current")
@report_errors
def current(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.table,
) -> None:
    """The database's schema revision and whether it is this version's (head)."""
    from services.scheduler import _migrate

    url, source = resolve_database_url(given=database_url, data_dir=global_options(ctx).data_dir)
    found = _run(_migrate.status(url), url=url)
    if output is OutputFormat.json:
        print_json(
            {
                "database_url": _migrate.display_url(url),
                "current": found.current,
                "head": found.head,
                "state": found.state,
                "up_to_date": found.state == "current",
            }
        )
        return
    upgrade_hint = "run `smartctl db upgrade`"
    described = {
        "current": f"{found.current} (head, up to date)",
        "outdated": f"{found.current} (outdated: head is {found.head}; {upgrade_hint})",
        "empty": f"none: no schema yet (head is {found.head}; {upgrade_hint})",
        "legacy": f"none: made before migrations (head is {found.head}; {upgrade_hint} adopts it)",
        "unknown": f"{found.current} (unknown to this version, head {found.head}: a newer one wrote it)",
    }[found.state]
    console.print(
        _fields(
            [
                ("database", f"{escape(_migrate.display_url(url))}  [dim]({escape(source)})[/]"),
                ("revision", escape(described)),
            ]
        )
    )

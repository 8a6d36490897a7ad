"""`smartctl scheduler|node|gateway serve`: run one service in the foreground (multi-host setups).

Every flag falls back to its SMARTFLEET_* environment variable, then to the service's default.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from cli._errors import CliError, report_errors
from services.common.config import GatewaySettings, NodeSettings, SchedulerSettings

scheduler_app = typer.Typer(
    help="The scheduler: runs, jobs, dispatch, results.", no_args_is_help=True
)
node_app = typer.Typer(
    help="A browser node: warm browsers that execute sessions.", no_args_is_help=True
)
gateway_app = typer.Typer(
    help="The gateway: the public, authenticated Fleet API.", no_args_is_help=True
)

SettingsT = TypeVar("SettingsT", SchedulerSettings, NodeSettings, GatewaySettings)

LogLevel = Annotated[
    str | None, typer.Option("--log-level", help="DEBUG, INFO, … [env SMARTFLEET_LOG_LEVEL]")
]
LogJson = Annotated[
    bool | None,
    typer.Option(
        "--log-json/--log-text", help="JSON log lines or plain text. [env SMARTFLEET_LOG_JSON]"
    ),
]
ReadyFile = Annotated[
    str | None,
    typer.Option(
        "--ready-file",
        help="Write the bound addresses here once serving. [env SMARTFLEET_READY_FILE]",
    ),
]
NatsUrl = Annotated[
    str | None,
    typer.Option(
        "--nats-url", help="NATS server URL(s), comma-separated. [env SMARTFLEET_NATS_URL]"
    ),
]
SchedulerAddr = Annotated[
    str | None,
    typer.Option(
        "--scheduler-addr",
        help="Every scheduler's HOST:PORT, comma-separated (a,b): calls follow the leader. "
        "[env SMARTFLEET_SCHEDULER_ADDR]",
    ),
]


def build_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Settings from SMARTFLEET_* env with the given (non-None) flag values on top."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return cls(**given)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg']}"
            for item in error.errors()
        )
        raise CliError(f"invalid {cls.__name__} (flags or SMARTFLEET_* env): {problems}") from error


@scheduler_app.command("serve")
@report_errors
def scheduler_serve(
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="HOST:PORT to serve on. [env SMARTFLEET_SCHEDULER_LISTEN]"),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="sqlite+aiosqlite:///path.db or postgresql+asyncpg://… [env SMARTFLEET_DATABASE_URL]",
        ),
    ] = None,
    upgrade_db: Annotated[
        bool | None,
        typer.Option(
            "--upgrade-db",
            help="Upgrade the database schema at start; without it an outdated schema is refused "
            "(see `smartctl db upgrade`). [env SMARTFLEET_DATABASE_UPGRADE]",
        ),
    ] = None,
    nats_url: NatsUrl = None,
    nats_replicas: Annotated[
        int | None,
        typer.Option(
            "--nats-replicas",
            min=1,
            max=5,
            help="Copies of the job stream: 1 for one NATS server, 3 on a cluster (checked "
            "at start). [env SMARTFLEET_NATS_REPLICAS]",
        ),
    ] = None,
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise",
            help="HOST:PORT clients are told to reach this scheduler at when it leads (as "
            "in their --scheduler-addr lists); default: the bound address. "
            "[env SMARTFLEET_SCHEDULER_ADVERTISE]",
        ),
    ] = None,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            "--allowed-hosts",
            help="Hosts runs may target besides loopback, comma-separated. [env SMARTFLEET_ALLOWED_HOSTS]",
        ),
    ] = None,
    ready_file: ReadyFile = None,
    log_level: LogLevel = None,
    log_json: LogJson = None,
) -> None:
    """Serve the scheduler until SIGINT/SIGTERM.

    Several may serve one PostgreSQL database: one leads, the others stand by and take over.

    On SQLite only one may run."""
    settings = build_settings(
        SchedulerSettings,
        scheduler_listen=listen,
        database_url=database_url,
        database_upgrade=upgrade_db,
        nats_url=nats_url,
        nats_replicas=nats_replicas,
        scheduler_advertise=advertise,
        allowed_hosts=allowed_hosts,
        ready_file=ready_file,
        log_level=log_level,
        log_json=log_json,
    )
    from services.scheduler.__main__ import main

    main(settings)


@node_app.command("serve")
@report_errors
def node_serve(
    node_id: Annotated[
        str | None,
        typer.Option(
            "--node-id", help="This node's id (default: hostname). [env SMARTFLEET_NODE_ID]"
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen", help="HOST:PORT for health and metrics. [env SMARTFLEET_NODE_LISTEN]"
        ),
    ] = None,
    scheduler_addr: SchedulerAddr = None,
    nats_url: NatsUrl = None,
    slots: Annotated[
        int | None,
        typer.Option(
            "--slots",
            min=0,
            help="Sessions at once; 0 sizes from CPUs and memory. [env SMARTFLEET_NODE_SLOTS]",
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels", help="Placement labels, e.g. region=eu,tier=a. [env SMARTFLEET_NODE_LABELS]"
        ),
    ] = None,
    browser_path: Annotated[
        str | None,
        typer.Option(
            "--browser-path", help="A Chromium executable to use. [env SMARTFLEET_BROWSER_PATH]"
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="chromium (default), or noop: benchmark-only, completes jobs without a browser. "
            "[env SMARTFLEET_NODE_ENGINE]",
        ),
    ] = None,
    ready_file: ReadyFile = None,
    log_level: LogLevel = None,
    log_json: LogJson = None,
) -> None:
    """Serve a browser node until SIGINT/SIGTERM (it drains first)."""
    settings = build_settings(
        NodeSettings,
        node_id=node_id,
        node_listen=listen,
        scheduler_addr=scheduler_addr,
        nats_url=nats_url,
        node_slots=slots,
        node_labels=labels,
        browser_path=browser_path,
        node_engine=engine,
        ready_file=ready_file,
        log_level=log_level,
        log_json=log_json,
    )
    from services.browser_node.__main__ import main

    main(settings)


@gateway_app.command("serve")
@report_errors
def gateway_serve(
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="HOST:PORT to serve on. [env SMARTFLEET_GATEWAY_LISTEN]"),
    ] = None,
    scheduler_addr: SchedulerAddr = None,
    tokens: Annotated[
        str | None,
        typer.Option(
            "--tokens",
            help="Accepted bearer tokens (or sha256:<hex>), comma-separated; prefer the env var or "
            "--token-file, command lines are visible to other users. [env SMARTFLEET_GATEWAY_TOKENS]",
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            help="A file with one token per line. [env SMARTFLEET_GATEWAY_TOKEN_FILE]",
        ),
    ] = None,
    ready_file: ReadyFile = None,
    log_level: LogLevel = None,
    log_json: LogJson = None,
) -> None:
    """Serve the public Fleet API until SIGINT/SIGTERM."""
    settings = build_settings(
        GatewaySettings,
        gateway_listen=listen,
        scheduler_addr=scheduler_addr,
        gateway_tokens=tokens,
        gateway_token_file=token_file,
        ready_file=ready_file,
        log_level=log_level,
        log_json=log_json,
    )
    from services.gateway.__main__ import main

    main(settings)

"""`smartctl scheduler|node|gateway serve`: run one service in the foreground (multi-host setups).

Every flag falls back to its SMARTFLEET_* environment variable, then to the service's default.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from rich.markup import escape

from cli._errors import CliError, report_errors
from services.common.config import GatewaySettings, NodeSettings, SchedulerSettings
from services.common.durations import format_duration

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
_ENV_PREFIX = "SMARTFLEET_"


def default_text(value: Any) -> str:
    """A setting's default as a flag or env value is written."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or value == "":
        return "none"
    return str(value)


def setting_help(field: str, text: str, cls: type[BaseSettings] = SchedulerSettings) -> str:
    """Help text with the setting's environment variable and its real default (from the
    settings class), escaped so Rich does not read `[env …]` as markup."""
    info = cls.model_fields[field]
    default = info.get_default(call_default_factory=True)
    return escape(f"{text} [env: {_ENV_PREFIX}{field.upper()}] [default: {default_text(default)}]")


LogLevel = Annotated[
    str | None,
    typer.Option("--log-level", help=setting_help("log_level", "DEBUG, INFO, WARNING or ERROR.")),
]
LogJson = Annotated[
    bool | None,
    typer.Option(
        "--log-json/--log-text", help=setting_help("log_json", "JSON log lines or plain text.")
    ),
]
ReadyFile = Annotated[
    str | None,
    typer.Option(
        "--ready-file",
        help=setting_help("ready_file", "Write the bound addresses here once serving."),
    ),
]
NatsUrl = Annotated[
    str | None,
    typer.Option(
        "--nats-url", help=setting_help("nats_url", "NATS server URL(s), comma-separated.")
    ),
]
SchedulerAddr = Annotated[
    str | None,
    typer.Option(
        "--scheduler-addr",
        help=setting_help(
            "scheduler_addr",
            "Every scheduler's HOST:PORT, comma-separated (a,b): calls follow the leader.",
            NodeSettings,
        ),
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
        typer.Option(
            "--listen",
            help=setting_help("scheduler_listen", "HOST:PORT to serve on.", SchedulerSettings),
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help=setting_help(
                "database_url",
                "sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db.",
                SchedulerSettings,
            ),
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
            help=setting_help(
                "allowed_hosts",
                "Hosts runs may target besides loopback, comma-separated (*.example.com too).",
                SchedulerSettings,
            ),
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
        typer.Option("--node-id", help=setting_help("node_id", "This node's id.", NodeSettings)),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help=setting_help("node_listen", "HOST:PORT for health and metrics.", NodeSettings),
        ),
    ] = None,
    scheduler_addr: SchedulerAddr = None,
    nats_url: NatsUrl = None,
    slots: Annotated[
        int | None,
        typer.Option(
            "--slots",
            min=0,
            help=setting_help(
                "node_slots", "Sessions at once; 0 sizes from CPUs and memory.", NodeSettings
            ),
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help=setting_help(
                "node_labels", "Placement labels, e.g. region=eu,tier=a (at most 4).", NodeSettings
            ),
        ),
    ] = None,
    browser_path: Annotated[
        str | None,
        typer.Option(
            "--browser-path",
            help=setting_help(
                "browser_path",
                "A Chromium executable (else Playwright's own, else a system Chromium).",
                NodeSettings,
            ),
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help=setting_help(
                "node_engine",
                "chromium, or noop: benchmark-only, completes jobs without a browser.",
                NodeSettings,
            ),
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
        typer.Option(
            "--listen",
            help=setting_help("gateway_listen", "HOST:PORT to serve on.", GatewaySettings),
        ),
    ] = None,
    scheduler_addr: SchedulerAddr = None,
    tokens: Annotated[
        str | None,
        typer.Option(
            "--tokens",
            help=setting_help(
                "gateway_tokens",
                "Accepted bearer tokens (or sha256:<hex>), comma-separated; prefer the env var or "
                "--token-file, command lines are visible to other users.",
                GatewaySettings,
            ),
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            help=setting_help(
                "gateway_token_file", "A file with one token per line.", GatewaySettings
            ),
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

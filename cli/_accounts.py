"""`smartctl accounts …`: named identities (storage state, proxy, rate limit) for sessions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf.duration_pb2 import Duration

from cli._accounts_client import open_accounts_client
from cli._context import output_format
from cli._data import enum_field_text, message_data
from cli._errors import CliError, report_errors
from cli._output import Column, OutputFormat, OutputOption, emit_list, emit_one, hint
from cli._text import short_time_text, timestamp_text, timestamp_value
from services.common.durations import format_duration, parse_duration
from smartfleet.v1 import accounts_pb2

app = typer.Typer(
    help="Manage accounts: logins (storage state), proxy, hourly limit, cooldown.",
    no_args_is_help=True,
)

MAX_STORAGE_STATE_FILE = 1024 * 1024

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The account's name.")]
LabelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--label", "-l", metavar="KEY=VALUE", help="A label runs select accounts by (repeat)."
    ),
]
ProxyOption = Annotated[
    str | None,
    typer.Option("--proxy", metavar="URL", help="Egress proxy: http://, https:// or socks5://."),
]
PerHourOption = Annotated[
    int | None,
    typer.Option("--per-hour", min=0, help="At most this many sessions an hour (0: no limit)."),
]
CooldownOption = Annotated[
    str | None,
    typer.Option(
        "--cooldown", metavar="DURATION", help="Rest after an account failure (default 15m)."
    ),
]
StorageStateOption = Annotated[
    Path | None,
    typer.Option(
        "--storage-state",
        metavar="FILE",
        help="Playwright storage state JSON (context.storage_state(path=…)); stored encrypted.",
    ),
]


def parse_labels(values: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--label: write KEY=VALUE, got {value!r}")
        labels[key.strip()] = item.strip()
    return labels


def parse_cooldown(text: str) -> Duration:
    try:
        value = parse_duration(text)
    except ValueError as error:
        raise CliError(f"--cooldown: {error}") from error
    message = Duration()
    message.FromTimedelta(value)
    return message


def read_storage_state(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read storage state {path}: {error.strerror or error}") from error
    if not data.strip():
        raise CliError(f"{path} is empty; save one with context.storage_state(path=...)")
    if len(data) > MAX_STORAGE_STATE_FILE:
        raise CliError(f"{path} is {len(data)} bytes; a storage state is at most 1 MB")
    return data


def update_request(
    name: str,
    *,
    labels: Sequence[str] = (),
    clear_labels: bool = False,
    proxy: str | None = None,
    per_hour: int | None = None,
    cooldown: str | None = None,
    enable: bool | None = None,
) -> tuple[accounts_pb2.Account, list[str]]:
    """The account fields to send and the update mask naming exactly the flags given."""
    account = accounts_pb2.Account(name=name)
    paths: list[str] = []
    if labels and clear_labels:
        raise CliError("--label and --clear-labels contradict each other")
    if labels or clear_labels:
        account.labels.update(parse_labels(labels))
        paths.append("labels")
    if proxy is not None:
        account.proxy = proxy
        paths.append("proxy")
    if per_hour is not None:
        account.sessions_per_hour = per_hour
        paths.append("sessions_per_hour")
    if cooldown is not None:
        account.cooldown.CopyFrom(parse_cooldown(cooldown))
        paths.append("cooldown")
    if enable is not None:
        account.status = (
            accounts_pb2.ACCOUNT_STATUS_ACTIVE if enable else accounts_pb2.ACCOUNT_STATUS_DISABLED
        )
        paths.append("status")
    return account, paths


_STATUS_STYLE = {"active": "green", "cooling": "yellow", "disabled": "dim"}


def _labels(account: accounts_pb2.Account) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(account.labels.items())) or "-"


def _cooldown(account: accounts_pb2.Account) -> str:
    if not account.HasField("cooldown"):
        return "-"
    value = account.cooldown.ToTimedelta()
    return format_duration(value) if value > timedelta(0) else "0s"


ACCOUNT_COLUMNS: list[Column[accounts_pb2.Account]] = [
    Column(header="ACCOUNT", text=lambda account: account.name),
    Column(
        header="STATUS",
        text=lambda account: enum_field_text(account, "status"),
        style=lambda account: _STATUS_STYLE.get(enum_field_text(account, "status")),
    ),
    Column(header="LABELS", text=_labels, wrap=12, priority=2),
    Column(header="PROXY", text=lambda account: account.proxy or "-", wrap=16, priority=4),
    Column(
        header="PER HOUR",
        text=lambda account: str(account.sessions_per_hour or "-"),
        value=lambda account: account.sessions_per_hour,
        right=True,
        priority=3,
    ),
    Column(header="COOLDOWN", text=_cooldown, priority=5),
    Column(
        header="STATE",
        text=lambda account: "stored" if account.has_storage_state else "-",
        value=lambda account: account.has_storage_state,
        priority=1,
    ),
    Column(
        header="UNTIL",
        text=lambda account: short_time_text(account.cooldown_until),
        value=lambda account: timestamp_value(account.cooldown_until),
        priority=1,
    ),
]


def account_fields(
    account: accounts_pb2.Account,
) -> list[tuple[str, str] | tuple[str, str, str | None]]:
    return [
        ("account", account.name),
        (
            "status",
            enum_field_text(account, "status"),
            _STATUS_STYLE.get(enum_field_text(account, "status")),
        ),
        ("labels", _labels(account)),
        ("proxy", account.proxy or "-"),
        ("sessions per hour", str(account.sessions_per_hour or "no limit")),
        ("cooldown", _cooldown(account)),
        ("cooling until", timestamp_text(account.cooldown_until)),
        ("storage state", "stored (encrypted)" if account.has_storage_state else "none"),
        ("created", timestamp_text(account.created_at)),
        ("updated", timestamp_text(account.updated_at)),
    ]


def _show(ctx: typer.Context, account: accounts_pb2.Account, output: OutputFormat | None) -> None:
    emit_one(
        account,
        output=output_format(ctx, output),
        data=message_data,
        fields=account_fields,
        columns=ACCOUNT_COLUMNS,
    )


@app.command("create")
@report_errors
def create(
    ctx: typer.Context,
    name: NameArgument,
    labels: LabelOption = None,
    proxy: ProxyOption = None,
    per_hour: PerHourOption = None,
    cooldown: CooldownOption = None,
    storage_state: StorageStateOption = None,
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Create it disabled (runs do not use it).")
    ] = False,
    output: OutputOption = None,
) -> None:
    """Create an account."""
    account = accounts_pb2.Account(
        name=name,
        labels=parse_labels(labels or ()),
        proxy=proxy or "",
        sessions_per_hour=per_hour or 0,
        status=accounts_pb2.ACCOUNT_STATUS_DISABLED
        if disabled
        else accounts_pb2.ACCOUNT_STATUS_ACTIVE,
    )
    if cooldown is not None:
        account.cooldown.CopyFrom(parse_cooldown(cooldown))
    state = read_storage_state(storage_state) if storage_state else b""
    with open_accounts_client(ctx) as client:
        created = client.create_account(account, storage_state=state)
    _show(ctx, created, output)


@app.command("ls")
@report_errors
def list_accounts(ctx: typer.Context, output: OutputOption = None) -> None:
    """List accounts with their status, labels and limits."""
    with open_accounts_client(ctx) as client:
        accounts = client.list_accounts()
    emit_list(
        accounts,
        columns=ACCOUNT_COLUMNS,
        output=output_format(ctx, output),
        key="accounts",
        data=message_data,
        empty="no accounts yet: smartctl accounts create NAME --storage-state state.json",
    )


@app.command("get")
@report_errors
def get_account(ctx: typer.Context, name: NameArgument, output: OutputOption = None) -> None:
    """Show an account (its storage state stays on the server)."""
    with open_accounts_client(ctx) as client:
        account = client.get_account(name)
    _show(ctx, account, output)


@app.command("update")
@report_errors
def update(
    ctx: typer.Context,
    name: NameArgument,
    labels: LabelOption = None,
    clear_labels: Annotated[
        bool, typer.Option("--clear-labels", help="Remove every label.")
    ] = False,
    proxy: Annotated[
        str | None,
        typer.Option("--proxy", metavar="URL", help='Egress proxy; --proxy "" removes it.'),
    ] = None,
    per_hour: PerHourOption = None,
    cooldown: CooldownOption = None,
    storage_state: StorageStateOption = None,
    clear_storage_state: Annotated[
        bool, typer.Option("--clear-storage-state", help="Remove the stored storage state.")
    ] = False,
    enable: Annotated[
        bool | None,
        typer.Option(
            "--enable/--disable",
            help="Enable (also ends a cooldown) or disable the account.",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = None,
) -> None:
    """Change an account; only the flags given change (--label replaces every label)."""
    account, paths = update_request(
        name,
        labels=labels or (),
        clear_labels=clear_labels,
        proxy=proxy,
        per_hour=per_hour,
        cooldown=cooldown,
        enable=enable,
    )
    if storage_state is not None and clear_storage_state:
        raise CliError("--storage-state and --clear-storage-state contradict each other")
    state = b""
    if storage_state is not None:
        state = read_storage_state(storage_state)
    if storage_state is not None or clear_storage_state:
        paths.append("storage_state")
    if not paths:
        raise CliError(
            "nothing to change: pass --label, --clear-labels, --proxy, --per-hour, --cooldown, "
            "--storage-state, --clear-storage-state, --enable or --disable"
        )
    with open_accounts_client(ctx) as client:
        updated = client.update_account(account, paths=paths, storage_state=state)
    _show(ctx, updated, output)


@app.command("delete")
@report_errors
def delete(ctx: typer.Context, name: NameArgument) -> None:
    """Delete an account and its stored storage state."""
    with open_accounts_client(ctx) as client:
        client.delete_account(name)
    hint(f"deleted account {name}")

"""The protobuf adapter of accounts and schedules: domain objects to messages and back."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from google.protobuf.duration_pb2 import Duration

from services.common.contracts import spec_to_pb, spelling, timestamp
from services.common.contracts._enums import number
from services.common.errors import InvalidArgument
from services.scheduler._account_rules import DEFAULT_COOLDOWN
from services.scheduler._accounts import Account, AccountChanges
from services.scheduler._schedules import Schedule
from smartfleet.v1 import accounts_pb2, schedules_pb2

_STATUS = accounts_pb2.AccountStatus.DESCRIPTOR

# What UpdateAccount's update_mask may name; "account." in front is accepted too.
UPDATABLE = ("labels", "proxy", "sessions_per_hour", "cooldown", "status", "storage_state")


def account_to_pb(account: Account) -> accounts_pb2.Account:
    cooldown = Duration()
    cooldown.FromTimedelta(account.cooldown)
    message = accounts_pb2.Account(
        name=account.name,
        labels=account.labels,
        proxy=account.proxy,
        sessions_per_hour=account.sessions_per_hour,
        cooldown=cooldown,
        status=cast(accounts_pb2.AccountStatus.ValueType, number(_STATUS, account.status)),
        has_storage_state=account.has_storage_state,
        created_at=timestamp(account.created_at),
        updated_at=timestamp(account.updated_at),
    )
    if account.cooldown_until is not None:
        message.cooldown_until.CopyFrom(timestamp(account.cooldown_until))
    return message


def cooldown_from_pb(message: accounts_pb2.Account) -> timedelta | None:
    if not message.HasField("cooldown"):
        return None
    if message.cooldown.nanos % 1000:
        raise InvalidArgument("account.cooldown", "has sub-microsecond precision")
    return message.cooldown.ToTimedelta()


def changes_from_pb(request: accounts_pb2.UpdateAccountRequest) -> AccountChanges:
    """FieldMask semantics: named fields are set (an empty value clears them, an unset cooldown
    restores the default); without a mask, every field given (non-empty) is set."""
    given = request.account
    paths = [path.removeprefix("account.") for path in request.update_mask.paths]
    for path in paths:
        if path not in UPDATABLE:
            reason = "cannot be changed" if path == "name" else "is not an account field"
            raise InvalidArgument(
                "update_mask", f"{path!r} {reason}; the mask names {', '.join(UPDATABLE)}"
            )
    if paths:
        named = set(paths)
        return AccountChanges(
            labels=dict(given.labels) if "labels" in named else None,
            proxy=given.proxy if "proxy" in named else None,
            sessions_per_hour=given.sessions_per_hour if "sessions_per_hour" in named else None,
            cooldown=(cooldown_from_pb(given) or DEFAULT_COOLDOWN) if "cooldown" in named else None,
            status=(spelling(_STATUS, given.status) or "active") if "status" in named else None,
            storage_state=request.storage_state if "storage_state" in named else None,
        )
    return AccountChanges(
        labels=dict(given.labels) or None,
        proxy=given.proxy or None,
        sessions_per_hour=given.sessions_per_hour or None,
        cooldown=cooldown_from_pb(given),
        status=spelling(_STATUS, given.status) or None,
        storage_state=request.storage_state or None,
    )


def schedule_to_pb(schedule: Schedule) -> schedules_pb2.Schedule:
    message = schedules_pb2.Schedule(
        name=schedule.name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        template=spec_to_pb(schedule.template),
        paused=schedule.paused,
        last_run_id=schedule.last_run_id,
        runs_created=schedule.runs_created,
        created_at=timestamp(schedule.created_at),
    )
    if schedule.next_fire_at is not None:
        message.next_fire_at.CopyFrom(timestamp(schedule.next_fire_at))
    if schedule.last_fire_at is not None:
        message.last_fire_at.CopyFrom(timestamp(schedule.last_fire_at))
    return message


def status_from_pb(value: int) -> str:
    """The status a create asks for: active (also when unspecified) or disabled."""
    status = spelling(_STATUS, value) or "active"
    if status not in ("active", "disabled"):
        raise InvalidArgument("account.status", "is active or disabled (cooling is the server's)")
    return status

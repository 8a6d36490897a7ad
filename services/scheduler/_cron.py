"""Cron expressions read in a time zone (croniter + zoneinfo), validated with a clear reason."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from services.common.errors import InvalidArgument

MAX_CRON = 200
FORMS = (
    "five fields (minute hour day month weekday) like '*/15 * * * *', a sixth for seconds "
    "('* * * * * */10'), or @hourly, @daily, @weekly, @monthly, @yearly"
)
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# Each field's name and value range, in the order croniter reads them (seconds last).
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
    ("second", 0, 59),
)
_NUMBER = re.compile(r"^\d+$")


def check_fields(cron: str) -> str | None:
    """Why a field of a 5- or 6-field expression is out of range, or None.

    croniter accepts steps past a field's range (`*/61` fires at minute 0 only), so ranges and
    steps are checked here; names (jan, mon), L, W, # and ? are left to croniter.
    """
    for text, (name, low, high) in zip(cron.split(), _FIELDS, strict=False):
        for item in text.split(","):
            base, slash, step = item.partition("/")
            if slash:
                if not _NUMBER.match(step) or not 1 <= int(step) <= high:
                    return f"the {name} field {text!r} has step {step!r}; {name} steps are 1-{high}"
            for bound in base.split("-") if base not in ("*", "?") else ():
                if _NUMBER.match(bound) and not low <= int(bound) <= high:
                    return f"the {name} field {text!r} has {bound}; {name} values are {low}-{high}"
    return None


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """When a cron expression fires; every datetime in and out is aware (results in UTC)."""

    expression: str
    timezone: str

    @classmethod
    def parse(
        cls, expression: str, timezone: str, *, field: str = "schedule", now: datetime | None = None
    ) -> CronSchedule:
        """Validate; InvalidArgument names `<field>.cron` or `<field>.timezone` and says why."""
        cron = " ".join(expression.split())
        if not cron:
            raise InvalidArgument(f"{field}.cron", f"is required: {FORMS}")
        if len(cron) > MAX_CRON:
            raise InvalidArgument(f"{field}.cron", f"is longer than {MAX_CRON} characters")
        if cron.startswith("@"):
            cron = cron.lower()
            if cron not in _MACROS:
                raise InvalidArgument(f"{field}.cron", f"unknown macro {cron!r}; use {FORMS}")
        elif len(cron.split()) not in (5, 6):
            raise InvalidArgument(
                f"{field}.cron", f"{cron!r} has {len(cron.split())} fields; write {FORMS}"
            )
        elif (problem := check_fields(cron)) is not None:
            raise InvalidArgument(f"{field}.cron", f"{cron!r} is not valid: {problem}")
        try:
            ZoneInfo(timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(
                f"{field}.timezone",
                f"unknown time zone {timezone!r} (an IANA name like Europe/Berlin)",
            ) from None
        schedule = cls(cron, timezone or "UTC")
        try:
            schedule.next_after(now or datetime.now(UTC))
        except CroniterBadDateError:
            raise InvalidArgument(f"{field}.cron", f"{cron!r} never fires") from None
        except (CroniterError, ValueError, KeyError) as error:
            raise InvalidArgument(f"{field}.cron", f"{cron!r} is not valid: {error}") from None
        return schedule

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment`."""
        ticks = croniter(self.expression, moment.astimezone(self.zone))
        return ticks.get_next(datetime).astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before `moment` (what a late wake-up fires, once)."""
        ticks = croniter(self.expression, moment.astimezone(self.zone) + timedelta(microseconds=1))
        return ticks.get_prev(datetime).astimezone(UTC)

    def stamp(self, tick: datetime) -> str:
        """A tick as run names show it: local time of the schedule, to the minute."""
        return tick.astimezone(self.zone).strftime("%Y%m%dT%H%M")

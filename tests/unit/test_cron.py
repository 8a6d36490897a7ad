"""Cron expressions in a time zone: next tick, latest due tick, names, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import InvalidArgument
from services.scheduler._cron import CronSchedule
from services.scheduler._schedules import run_name, validate_template


def test_ticks_are_read_in_the_schedule_time_zone() -> None:
    """09:00 Europe/Berlin is 08:00 UTC in winter and 07:00 UTC in summer."""
    cron = CronSchedule.parse("0 9 * * *", "Europe/Berlin")
    assert cron.next_after(datetime(2025, 1, 10, 12, tzinfo=UTC)) == datetime(
        2025, 1, 11, 8, tzinfo=UTC
    )
    assert cron.next_after(datetime(2025, 7, 10, 12, tzinfo=UTC)) == datetime(
        2025, 7, 11, 7, tzinfo=UTC
    )


def test_latest_due_tick_includes_an_exact_tick() -> None:
    """A wake-up exactly on a tick fires that tick; later, the last one before it."""
    cron = CronSchedule.parse("*/15 * * * *", "UTC")
    on_tick = datetime(2025, 3, 1, 10, 15, tzinfo=UTC)
    assert cron.latest_at_or_before(on_tick) == on_tick
    assert cron.latest_at_or_before(on_tick + timedelta(minutes=14)) == on_tick
    assert cron.next_after(on_tick) == on_tick + timedelta(minutes=15)


def test_fields_in_range_are_accepted() -> None:
    """Steps, ranges, lists, names and croniter's L and # stay valid."""
    for cron in (
        "*/59 * * * *",
        "0 9-17/2 * * 1-5",
        "0 0 L * *",
        "0 0 * * 5#3",
        "0 0 1 jan-mar mon",
    ):
        CronSchedule.parse(cron, "UTC")


def test_seconds_field_and_macros() -> None:
    """A sixth field is seconds; @hourly and friends work, in any case."""
    every_second = CronSchedule.parse("* * * * * *", "UTC")
    moment = datetime(2025, 3, 1, 10, 0, 0, 400_000, tzinfo=UTC)
    assert every_second.next_after(moment) == datetime(2025, 3, 1, 10, 0, 1, tzinfo=UTC)
    assert CronSchedule.parse("@HOURLY", "UTC").expression == "@hourly"


def test_run_names_use_the_local_minute() -> None:
    """Runs are named <schedule>-<YYYYmmddTHHMM> in the schedule's time zone."""
    cron = CronSchedule.parse("0 9 * * *", "Europe/Berlin")
    assert run_name("daily", cron, datetime(2025, 1, 11, 8, tzinfo=UTC)) == "daily-20250111T0900"


@pytest.mark.parametrize(
    ("cron", "timezone", "field", "reason"),
    [
        ("", "UTC", "schedule.cron", "is required"),
        ("* * *", "UTC", "schedule.cron", "has 3 fields"),
        ("* * * * * * *", "UTC", "schedule.cron", "has 7 fields"),
        ("61 * * * *", "UTC", "schedule.cron", "not valid"),
        ("*/61 * * * *", "UTC", "schedule.cron", "the minute field '*/61' has step '61'"),
        ("*/0 * * * *", "UTC", "schedule.cron", "minute steps are 1-59"),
        ("0 9-25 * * *", "UTC", "schedule.cron", "hour values are 0-23"),
        ("0 0 0 * *", "UTC", "schedule.cron", "day-of-month values are 1-31"),
        ("0 0 1 1,13 *", "UTC", "schedule.cron", "month values are 1-12"),
        ("0 0 * * */8", "UTC", "schedule.cron", "day-of-week steps are 1-7"),
        ("* * * * * 61", "UTC", "schedule.cron", "second values are 0-59"),
        ("0 0 30 2 *", "UTC", "schedule.cron", "never fires"),
        ("@fortnightly", "UTC", "schedule.cron", "unknown macro"),
        ("* * * * *", "Nowhere/Town", "schedule.timezone", "unknown time zone"),
    ],
)
def test_invalid_cron_names_the_field(cron: str, timezone: str, field: str, reason: str) -> None:
    """Each kind of mistake is an InvalidArgument naming schedule.cron or schedule.timezone."""
    with pytest.raises(InvalidArgument) as caught:
        CronSchedule.parse(cron, timezone)
    assert caught.value.field == field and reason in caught.value.reason


def test_template_errors_are_under_schedule_template() -> None:
    """validate_spec's paths are re-rooted at schedule.template."""
    with pytest.raises(InvalidArgument) as caught:
        validate_template({"targets": ["ftp://x/"], "sessions": 1}, allowed_hosts=[])
    assert caught.value.field == "schedule.template.targets[0]"
    with pytest.raises(InvalidArgument) as caught:
        validate_template({"sessions": 1}, allowed_hosts=[])
    assert caught.value.field == "schedule.template.targets"

"""`next_run_times`: what each kind of schedule means, in plain Python (SPEC §2.4)."""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from crmflow.definitions import Schedule
from crmflow.schedules import next_run_times

Build = Callable[..., Schedule]


def runs(schedule: Schedule, timezone: str, after: str, count: int) -> list[str]:
    """ISO-8601 run times with their offset, after a local wall time in `timezone`."""
    start = datetime.fromisoformat(after).replace(tzinfo=ZoneInfo(timezone))
    times = next_run_times(schedule, timezone=timezone, after=start, count=count)
    return [t.isoformat() for t in times]


def days(schedule: Schedule, timezone: str, after: str, count: int) -> list[str]:
    return [t[:10] for t in runs(schedule, timezone, after, count)]


def test_daily_runs_strictly_after_and_in_the_workflow_zone(schedule_of: Build) -> None:
    daily = schedule_of(every="day", at="08:00")
    assert runs(daily, "Europe/Paris", "2027-01-30T08:00", 3) == [
        "2027-01-31T08:00:00+01:00",
        "2027-02-01T08:00:00+01:00",
        "2027-02-02T08:00:00+01:00",
    ]
    after = datetime(2027, 1, 30, 7, 0, tzinfo=UTC)  # 08:00 in Paris: not strictly after
    first = next_run_times(daily, timezone="Europe/Paris", after=after, count=1)[0]
    assert first.isoformat() == "2027-01-31T08:00:00+01:00"
    assert first.tzinfo == ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("timezone", "expected"),
    [
        ("UTC", "2027-06-01T09:30:00+00:00"),
        ("Asia/Tokyo", "2027-06-01T09:30:00+09:00"),
        ("Asia/Kolkata", "2027-06-01T09:30:00+05:30"),
        ("America/Los_Angeles", "2027-06-01T09:30:00-07:00"),
        ("Australia/Sydney", "2027-06-01T09:30:00+10:00"),
    ],
)
def test_time_zones(schedule_of: Build, timezone: str, expected: str) -> None:
    daily = schedule_of(every="day", at="09:30")
    assert runs(daily, timezone, "2027-06-01T00:00", 1) == [expected]


def test_weekly_on_several_days(schedule_of: Build) -> None:
    weekly = schedule_of(every="week", at="08:00", days=["fri", "mon"])
    assert days(weekly, "UTC", "2027-01-01T09:00", 4) == [
        "2027-01-04",  # Monday
        "2027-01-08",  # Friday
        "2027-01-11",
        "2027-01-15",
    ]


def test_days_of_month_a_month_lacks_are_skipped_not_moved(schedule_of: Build) -> None:
    monthly = schedule_of(every="month", at="08:00", days_of_month=[1, 15, 31])
    assert days(monthly, "UTC", "2027-01-01T09:00", 10) == [
        "2027-01-15",
        "2027-01-31",
        "2027-02-01",  # no February 31
        "2027-02-15",
        "2027-03-01",
        "2027-03-15",
        "2027-03-31",
        "2027-04-01",  # no April 31
        "2027-04-15",
        "2027-05-01",
    ]


def test_days_of_month_at_the_end_of_february(schedule_of: Build) -> None:
    monthly = schedule_of(every="month", at="08:00", days_of_month=[29, 30, 31])
    assert days(monthly, "UTC", "2027-01-31T09:00", 2) == ["2027-03-29", "2027-03-30"]
    assert days(monthly, "UTC", "2028-01-31T09:00", 2) == ["2028-02-29", "2028-03-29"]


def test_last_day_of_month(schedule_of: Build) -> None:
    last = schedule_of(every="month", at="15:00", on="last_day")
    assert days(last, "UTC", "2027-01-01T00:00", 5) == [
        "2027-01-31",
        "2027-02-28",
        "2027-03-31",
        "2027-04-30",
        "2027-05-31",
    ]
    assert days(last, "UTC", "2028-02-01T00:00", 1) == ["2028-02-29"]
    assert days(last, "UTC", "2100-02-01T00:00", 1) == ["2100-02-28"]  # 2100 is not leap
    assert days(last, "UTC", "2000-02-01T00:00", 1) == ["2000-02-29"]  # 2000 is


@pytest.mark.parametrize(
    ("on", "after", "expected"),
    [
        ("first_monday", "2027-01-31", ["2027-02-01", "2027-03-01", "2027-04-05"]),
        ("second_tuesday", "2027-01-31", ["2027-02-09", "2027-03-09", "2027-04-13"]),
        ("third_wednesday", "2027-01-31", ["2027-02-17", "2027-03-17", "2027-04-21"]),
        ("fourth_sunday", "2027-01-31", ["2027-02-28", "2027-03-28", "2027-04-25"]),
        # February 2027 starts on a Monday: its last Monday is the 22nd, 7 days from the end.
        ("last_monday", "2027-01-31", ["2027-02-22", "2027-03-29", "2027-04-26"]),
        # February 2028 starts on a Tuesday and has 29 days: its last Tuesday is the 29th.
        ("last_tuesday", "2028-01-31", ["2028-02-29", "2028-03-28", "2028-04-25"]),
        ("fourth_tuesday", "2028-01-31", ["2028-02-22", "2028-03-28", "2028-04-25"]),
        ("last_friday", "2027-01-31", ["2027-02-26", "2027-03-26", "2027-04-30"]),
    ],
)
def test_nth_and_last_weekday(schedule_of: Build, on: str, after: str, expected: list[str]) -> None:
    monthly = schedule_of(every="month", at="09:00", on=on)
    assert days(monthly, "UTC", f"{after}T00:00", 3) == expected


@pytest.mark.parametrize("ordinal", ["first", "second", "third", "fourth", "last"])
@pytest.mark.parametrize("weekday", range(7))
def test_nth_weekday_against_the_calendar_module(
    schedule_of: Build, ordinal: str, weekday: int
) -> None:
    name = calendar.day_name[weekday].lower()
    monthly = schedule_of(every="month", at="09:00", on=f"{ordinal}_{name}")
    found = days(monthly, "UTC", "2027-01-01T00:00", 36)  # three years, leap 2028 included
    expected = []
    for year in (2027, 2028, 2029):
        for month in range(1, 13):
            dates = [w[weekday] for w in calendar.monthcalendar(year, month) if w[weekday]]
            index = {"first": 0, "second": 1, "third": 2, "fourth": 3, "last": -1}[ordinal]
            expected.append(date(year, month, dates[index]).isoformat())
    assert found == expected


def test_yearly_and_february_29(schedule_of: Build) -> None:
    july = schedule_of(every="year", at="08:00", month=7, day=4)
    assert days(july, "UTC", "2027-07-04T08:00", 2) == ["2028-07-04", "2029-07-04"]
    leap = schedule_of(every="year", at="08:00", month=2, day=29)
    assert days(leap, "UTC", "2027-01-01T00:00", 3) == ["2028-02-29", "2032-02-29", "2036-02-29"]
    assert days(leap, "UTC", "2096-03-01T00:00", 1) == []  # 2100 is not leap; Temporal stops


def test_runs_stop_at_the_end_of_2100(schedule_of: Build) -> None:
    daily = schedule_of(every="day", at="23:00")
    times = runs(daily, "America/New_York", "2100-12-28T00:00", 10)
    # 2100-12-31 23:00 in New York is already 2101 in UTC: Temporal does not run it.
    assert times == [
        "2100-12-28T23:00:00-05:00",
        "2100-12-29T23:00:00-05:00",
        "2100-12-30T23:00:00-05:00",
    ]
    assert runs(daily, "Asia/Tokyo", "2100-12-30T00:00", 10)[-1] == "2100-12-31T23:00:00+09:00"


def test_count_and_aware_after(schedule_of: Build) -> None:
    daily = schedule_of(every="day", at="08:00")
    assert next_run_times(daily, timezone="UTC", after=datetime.now(UTC), count=0) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run_times(daily, timezone="UTC", after=datetime(2027, 1, 1), count=1)


# Daylight saving: a wall time that does not exist runs once, moved forward by the gap; one
# that occurs twice runs once, at its first occurrence (RFC 5545).


@pytest.mark.parametrize(
    ("timezone", "at", "after", "expected"),
    [
        # New York springs forward 2027-03-14 02:00 -> 03:00.
        (
            "America/New_York",
            "02:30",
            "2027-03-13T12:00",
            ["2027-03-14T03:30:00-04:00", "2027-03-15T02:30:00-04:00"],
        ),
        (
            "America/New_York",
            "01:30",
            "2027-03-13T12:00",
            ["2027-03-14T01:30:00-05:00", "2027-03-15T01:30:00-04:00"],
        ),
        (
            "America/New_York",
            "03:00",
            "2027-03-13T12:00",
            ["2027-03-14T03:00:00-04:00", "2027-03-15T03:00:00-04:00"],
        ),
        # ... and falls back 2027-11-07 02:00 -> 01:00: 01:00-01:59 occur twice.
        (
            "America/New_York",
            "01:30",
            "2027-11-06T12:00",
            ["2027-11-07T01:30:00-04:00", "2027-11-08T01:30:00-05:00"],
        ),
        (
            "America/New_York",
            "02:30",
            "2027-11-06T12:00",
            ["2027-11-07T02:30:00-05:00", "2027-11-08T02:30:00-05:00"],
        ),
        # Paris springs forward 2027-03-28 02:00 -> 03:00 ...
        (
            "Europe/Paris",
            "02:30",
            "2027-03-27T12:00",
            ["2027-03-28T03:30:00+02:00", "2027-03-29T02:30:00+02:00"],
        ),
        (
            "Europe/Paris",
            "02:00",
            "2027-03-27T12:00",
            ["2027-03-28T03:00:00+02:00", "2027-03-29T02:00:00+02:00"],
        ),
        # ... and falls back 2027-10-31 03:00 -> 02:00: 02:00-02:59 occur twice.
        (
            "Europe/Paris",
            "02:30",
            "2027-10-30T12:00",
            ["2027-10-31T02:30:00+02:00", "2027-11-01T02:30:00+01:00"],
        ),
        (
            "Europe/Paris",
            "01:30",
            "2027-10-30T12:00",
            ["2027-10-31T01:30:00+02:00", "2027-11-01T01:30:00+01:00"],
        ),
        (
            "Europe/Paris",
            "03:00",
            "2027-10-30T12:00",
            ["2027-10-31T03:00:00+01:00", "2027-11-01T03:00:00+01:00"],
        ),
        # Lord Howe moves by 30 minutes: 02:00 -> 02:30 on 2027-10-03.
        (
            "Australia/Lord_Howe",
            "02:15",
            "2027-10-02T12:00",
            ["2027-10-03T02:45:00+11:00", "2027-10-04T02:15:00+11:00"],
        ),
    ],
)
def test_dst_changes_run_exactly_once(
    schedule_of: Build, timezone: str, at: str, after: str, expected: list[str]
) -> None:
    assert runs(schedule_of(every="day", at=at), timezone, after, 2) == expected


def test_dst_change_days_have_one_run_each(schedule_of: Build) -> None:
    zone = ZoneInfo("America/New_York")
    for at in ("00:30", "01:00", "01:30", "02:00", "02:30", "03:00"):
        times = next_run_times(
            schedule_of(every="day", at=at),
            timezone="America/New_York",
            after=datetime(2027, 1, 1, 12, tzinfo=zone),
            count=365,
        )
        dates = [t.date() for t in times]
        assert dates == [date(2027, 1, 2) + timedelta(days=i) for i in range(365)]
        assert times == sorted(times)

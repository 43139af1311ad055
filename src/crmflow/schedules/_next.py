"""What a schedule means, in plain Python: the days it runs and the instant of each run."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from typing import assert_never
from zoneinfo import ZoneInfo

from crmflow.definitions import (
    DailySchedule,
    MonthlySchedule,
    Schedule,
    WeeklySchedule,
    YearlySchedule,
)

FIRST_YEAR = 2000
LAST_YEAR = 2100
"""Temporal matches calendar specs in years 2000-2100 only: no run is ever computed later."""

_DAY = timedelta(days=1)


def runs_on(schedule: Schedule, day: date) -> bool:
    """Whether `schedule` runs on this local date (SPEC §2.4)."""
    match schedule:
        case DailySchedule():
            return True
        case WeeklySchedule():
            return day.weekday() in schedule.weekdays()
        case YearlySchedule():
            return (day.month, day.day) == (schedule.month, schedule.day)
        case MonthlySchedule():
            if schedule.days_of_month is not None:
                # A day the month lacks never equals `day.day`: that month simply has no run.
                return day.day in schedule.days_of_month
            length = calendar.monthrange(day.year, day.month)[1]
            nth = schedule.nth_weekday()
            if nth is None:  # on: last_day
                return day.day == length
            n, weekday = nth
            if day.weekday() != weekday:
                return False
            return day.day > length - 7 if n == -1 else (day.day - 1) // 7 + 1 == n
        case _:
            assert_never(schedule)


def wall_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The instant of wall time `at` on `day` in `zone`, with the RFC 5545 rule for DST changes.

    `fold=0` gives it: a wall time that occurs twice is its first occurrence (daylight time);
    one that does not exist is read with the offset in force before the change, i.e. moved
    forward by the length of the gap (02:30 on a spring-forward day is 03:30). Also used by the
    enrollment interpreter (execution windows, delays), so schedules and actions agree.
    """
    wall = datetime.combine(day, at, tzinfo=zone)
    # Through UTC so a nonexistent wall time prints as the real one (03:30-04:00, not 02:30-05:00).
    return wall.astimezone(UTC).astimezone(zone)


def run_instant(schedule: Schedule, day: date, zone: ZoneInfo) -> datetime:
    """The instant of the run on `day`, in `zone` (`wall_instant` of its time)."""
    return wall_instant(day, schedule.at, zone)


def next_run_times(
    schedule: Schedule, *, timezone: str, after: datetime, count: int
) -> list[datetime]:
    """The next `count` run instants strictly after `after` (aware), in the zone `timezone`.

    These are the times the Temporal Schedule built by `schedule_spec` fires, DST days
    included. Fewer than `count` come back when the runs reach the end of 2100 (Temporal's
    last calendar year).
    """
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    zone = ZoneInfo(timezone)
    # A day earlier: a run moved forward over a gap late in the evening lands on the next day.
    day = after.astimezone(zone).date() - _DAY
    runs: list[datetime] = []
    while len(runs) < count and day.year <= LAST_YEAR:
        if runs_on(schedule, day):
            run = run_instant(schedule, day, zone)
            if run.astimezone(UTC).year > LAST_YEAR:
                break
            if run > after:
                runs.append(run)
        day += _DAY
    return runs

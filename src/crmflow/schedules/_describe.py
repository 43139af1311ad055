"""A schedule in words, for listings and pictures: "every week on fri at 08:00 Europe/Paris"."""

from __future__ import annotations

import calendar
from typing import assert_never

from crmflow.definitions import (
    WEEKDAYS,
    DailySchedule,
    MonthlySchedule,
    Schedule,
    WeeklySchedule,
    YearlySchedule,
)


def describe_schedule(schedule: Schedule, *, timezone: str) -> str:
    """The schedule in words: "every week on fri at 08:00 Europe/Paris"."""
    match schedule:
        case DailySchedule():
            when = "every day"
        case WeeklySchedule():
            when = f"every week on {', '.join(WEEKDAYS[day] for day in schedule.weekdays())}"
        case MonthlySchedule() if schedule.days_of_month is not None:
            days = sorted(schedule.days_of_month)
            when = f"every month on day{'s' if len(days) > 1 else ''} {', '.join(map(str, days))}"
            if days[-1] > 28:  # SPEC §2.4: never moved to another day
                when += " (no run in a month without the day)"
        case MonthlySchedule():
            when = f"every month on the {str(schedule.on).replace('_', ' ')}"
        case YearlySchedule():
            when = f"every year on {calendar.month_abbr[schedule.month].lower()} {schedule.day}"
            if (schedule.month, schedule.day) == (2, 29):
                when += " (leap years only)"
        case _:
            assert_never(schedule)
    return f"{when} at {schedule.at:%H:%M} {timezone}"

from __future__ import annotations

from collections.abc import Callable
from datetime import time

import pytest

from crmflow.definitions import (
    DailySchedule,
    MonthlySchedule,
    Problem,
    WeeklySchedule,
    WorkflowDefinition,
    YearlySchedule,
)

Load = Callable[..., WorkflowDefinition]


def scheduled(schedule: str) -> str:
    # The schedule is on line 6 of this document.
    return f"""\
key: digest
name: Digest
enrollment:
  trigger: schedule
  criteria: {{in_list: newsletter}}
  schedule: {schedule}
actions:
  - {{id: send, type: send_email, subject: News, body: Hi}}
"""


@pytest.mark.parametrize(
    ("schedule", "cls"),
    [
        ('{every: day,   at: "08:00"}', DailySchedule),
        ('{every: week,  at: "08:00", days: [fri]}', WeeklySchedule),
        ('{every: month, at: "08:00", days_of_month: [1, 15, 31]}', MonthlySchedule),
        ('{every: month, at: "15:00", on: last_day}', MonthlySchedule),
        ('{every: month, at: "09:00", on: first_monday}', MonthlySchedule),
        ('{every: year,  at: "08:00", month: 7, day: 4}', YearlySchedule),
    ],
)
def test_six_schedule_forms(load: Load, schedule: str, cls: type) -> None:
    definition = load(scheduled(schedule), header=False)
    assert type(definition.enrollment.schedule) is cls
    assert definition.enrollment.schedule is not None
    assert definition.enrollment.schedule.at.minute == 0


def test_schedule_values(load: Load) -> None:
    weekly = load(scheduled('{every: week, at: "08:30", days: [fri, mon]}'), header=False)
    schedule = weekly.enrollment.schedule
    assert isinstance(schedule, WeeklySchedule)
    assert schedule.at == time(8, 30)
    assert schedule.weekdays() == [0, 4]
    monthly = load(scheduled('{every: month, at: "09:00", on: last_friday}'), header=False)
    assert isinstance(monthly.enrollment.schedule, MonthlySchedule)
    assert monthly.enrollment.schedule.nth_weekday() == (-1, 4)
    second = MonthlySchedule(every="month", at=time(9), on="second_sunday")
    assert second.nth_weekday() == (2, 6)
    assert MonthlySchedule(every="month", at=time(9), on="last_day").nth_weekday() is None
    leap = load(scheduled('{every: year, at: "08:00", month: 2, day: 29}'), header=False)
    assert isinstance(leap.enrollment.schedule, YearlySchedule)


@pytest.mark.parametrize(
    ("schedule", "path", "message"),
    [
        ('{every: hour, at: "08:00"}', "enrollment.schedule.every", "unknown every 'hour'"),
        ("{every: day}", "enrollment.schedule.at", "required"),
        ('{every: day, at: "8:00"}', "enrollment.schedule.at", "invalid time of day"),
        ('{every: day, at: "24:00"}', "enrollment.schedule.at", "invalid time of day"),
        ('{every: week, at: "08:00", days: []}', "enrollment.schedule.days", "must not be empty"),
        ('{every: week, at: "08:00"}', "enrollment.schedule.days", "required"),
        (
            '{every: week, at: "08:00", days: [fri, fri]}',
            "enrollment.schedule.days[1]",
            "fri is listed twice",
        ),
        ('{every: week, at: "08:00", days: [friday]}', "enrollment.schedule.days[0]", "'fri'"),
        ('{every: month, at: "08:00"}', "enrollment.schedule", "exactly one of days_of_month"),
        (
            '{every: month, at: "08:00", days_of_month: [1], on: last_day}',
            "enrollment.schedule",
            "exactly one of days_of_month or on",
        ),
        (
            '{every: month, at: "08:00", days_of_month: []}',
            "enrollment.schedule.days_of_month",
            "must not be empty",
        ),
        (
            '{every: month, at: "08:00", days_of_month: [0]}',
            "enrollment.schedule.days_of_month[0]",
            "greater than or equal to 1",
        ),
        (
            '{every: month, at: "08:00", days_of_month: [32]}',
            "enrollment.schedule.days_of_month[0]",
            "less than or equal to 31",
        ),
        (
            '{every: month, at: "08:00", days_of_month: [5, 5]}',
            "enrollment.schedule.days_of_month[1]",
            "5 is listed twice",
        ),
        (
            '{every: month, at: "08:00", on: fifth_monday}',
            "enrollment.schedule.on",
            "first|second|third|fourth|last",
        ),
        (
            '{every: month, at: "08:00", on: first_day}',
            "enrollment.schedule.on",
            "invalid 'on' 'first_day'",
        ),
        ('{every: year, at: "08:00", month: 2, day: 30}', "enrollment.schedule.day", "February"),
        ('{every: year, at: "08:00", month: 4, day: 31}', "enrollment.schedule.day", "April has"),
        (
            '{every: year, at: "08:00", month: 13, day: 1}',
            "enrollment.schedule.month",
            "less than or equal to 12",
        ),
        (
            '{every: year, at: "08:00", month: "7", day: 4}',
            "enrollment.schedule.month",
            "expected an integer",
        ),
    ],
)
def test_schedule_rejects(
    problem: Callable[..., Problem], schedule: str, path: str, message: str
) -> None:
    found = problem(scheduled(schedule), header=False)
    assert found.path == path
    assert message in found.message
    assert found.line == 6

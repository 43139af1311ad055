"""Schedules of scheduled workflows (SPEC §2.4), discriminated by `every`.

Times are in the workflow's `settings.timezone`.
"""

from __future__ import annotations

import calendar
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from ._base import DefinitionModel, DefinitionProblems
from ._durations import TimeOfDay
from ._types import WEEKDAYS, Weekday

_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTH_ON = re.compile(rf"^({'|'.join(_ORDINALS)})_({'|'.join(_DAY_NAMES)})$")
MONTH_ON_VALUES = ("last_day", *(f"{o}_{d}" for o in _ORDINALS for d in _DAY_NAMES))


def _month_on(value: str) -> str:
    if value != "last_day" and not _MONTH_ON.match(value):
        raise ValueError(
            f"invalid 'on' {value!r}: use last_day, or first|second|third|fourth|last followed by"
            " _monday.._sunday, e.g. first_monday"
        )
    return value


MonthOn = Annotated[
    str,
    AfterValidator(_month_on),
    WithJsonSchema({"type": "string", "enum": list(MONTH_ON_VALUES)}),
]
DayOfMonth = Annotated[int, Field(strict=True, ge=1, le=31)]


def _unique_days(field: str, values: list[Weekday] | list[int]) -> None:
    seen: set[object] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise DefinitionProblems([((field, index), f"{value} is listed twice")])
        seen.add(value)


class DailySchedule(DefinitionModel):
    """Every day at a time."""

    every: Literal["day"] = Field(description="Run every day")
    at: TimeOfDay = Field(description='Time of day, "HH:MM"')


class WeeklySchedule(DefinitionModel):
    """On some days of each week at a time."""

    every: Literal["week"] = Field(description="Run every week")
    at: TimeOfDay = Field(description='Time of day, "HH:MM"')
    days: list[Weekday] = Field(min_length=1, description="Days of the week: mon … sun")

    @model_validator(mode="after")
    def _check(self) -> WeeklySchedule:
        _unique_days("days", self.days)
        return self

    def weekdays(self) -> list[int]:
        """The days as `datetime.weekday()` numbers (0 = Monday)."""
        return sorted(WEEKDAYS.index(day) for day in self.days)


class MonthlySchedule(DefinitionModel):
    """On specific days of each month, or on a flexible day (`last_day`, `first_monday`…).

    A specific day a month lacks (the 31st in February) does not run that month.
    """

    every: Literal["month"] = Field(description="Run every month")
    at: TimeOfDay = Field(description='Time of day, "HH:MM"')
    days_of_month: list[DayOfMonth] | None = Field(
        default=None, min_length=1, description="Specific days, 1-31"
    )
    on: MonthOn | None = Field(
        default=None, description="A flexible day: last_day, or e.g. first_monday, last_friday"
    )

    @model_validator(mode="after")
    def _check(self) -> MonthlySchedule:
        if (self.days_of_month is None) == (self.on is None):
            raise ValueError("give exactly one of days_of_month or on")
        if self.days_of_month is not None:
            _unique_days("days_of_month", self.days_of_month)
        return self

    def nth_weekday(self) -> tuple[int, int] | None:
        """For `on: <ordinal>_<day>`: (n, weekday) with n in 1..4 or -1 for last, weekday 0..6."""
        if self.on is None or self.on == "last_day":
            return None
        ordinal, day = self.on.split("_")
        return _ORDINALS[ordinal], _DAY_NAMES.index(day)


class YearlySchedule(DefinitionModel):
    """On one day of each year (February 29 runs in leap years only)."""

    every: Literal["year"] = Field(description="Run every year")
    at: TimeOfDay = Field(description='Time of day, "HH:MM"')
    month: int = Field(strict=True, ge=1, le=12, description="Month, 1-12")
    day: int = Field(strict=True, ge=1, le=31, description="Day of the month")

    @model_validator(mode="after")
    def _check(self) -> YearlySchedule:
        # 2000 is a leap year: February 29 is a valid (if rare) yearly date.
        if self.day > calendar.monthrange(2000, self.month)[1]:
            message = f"{calendar.month_name[self.month]} has no day {self.day}"
            raise DefinitionProblems([(("day",), message)])
        return self


Schedule = Annotated[
    DailySchedule | WeeklySchedule | MonthlySchedule | YearlySchedule,
    Field(discriminator="every"),
]

"""Temporal calendar specs built in code from a schedule (never from a cron string)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import assert_never

from temporalio.client import (
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleRange,
    ScheduleSpec,
)

from crmflow.definitions import (
    DailySchedule,
    MonthlySchedule,
    Schedule,
    WeeklySchedule,
    YearlySchedule,
)

from ._dst import dst_days
from ._next import FIRST_YEAR, LAST_YEAR

_MONTHS = frozenset(range(1, 13))
_DAYS = frozenset(range(1, 32))
_LONG_MONTHS = frozenset({1, 3, 5, 7, 8, 10, 12})
_SHORT_MONTHS = frozenset({4, 6, 9, 11})
_FEBRUARY = frozenset({2})
# Exact for every year Temporal can reach (2000-2100): 2000 is a leap year, 2100 is not.
_LEAP_YEARS = (ScheduleRange(2000, 2096, 4),)
_COMMON_YEARS = (
    ScheduleRange(2001, 2097, 4),
    ScheduleRange(2002, 2098, 4),
    ScheduleRange(2003, 2099, 4),
    ScheduleRange(2100),
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
# Drops every time off the whole minute: all calendars fire at second 0; see `_one_off`.
_OFF_MINUTE = ScheduleCalendarSpec(
    second=(ScheduleRange(1, 59),),
    minute=(ScheduleRange(0, 59),),
    hour=(ScheduleRange(0, 23),),
    comment="one-off runs: drop their repeats (off the whole minute)",
)


@dataclass(frozen=True)
class _Days:
    """The days one calendar matches: every field must match (Temporal ANDs day of month and
    day of week, unlike POSIX cron)."""

    comment: str
    months: frozenset[int] = _MONTHS
    days: frozenset[int] = _DAYS
    weekdays: frozenset[int] | None = None  # `date.weekday()` numbers; None: any day
    years: tuple[ScheduleRange, ...] = ()  # empty: every year

    def matches(self, day: date) -> bool:
        return (
            day.month in self.months
            and day.day in self.days
            and (self.weekdays is None or day.weekday() in self.weekdays)
            and (not self.years or day.year in _years(self.years))
        )

    def calendar(self, at: time) -> ScheduleCalendarSpec:
        # Temporal counts weekdays from Sunday = 0.
        weekdays = range(7) if self.weekdays is None else ((w + 1) % 7 for w in self.weekdays)
        return ScheduleCalendarSpec(
            second=(ScheduleRange(0),),
            minute=(ScheduleRange(at.minute),),
            hour=(ScheduleRange(at.hour),),
            day_of_month=_ranges(self.days),
            month=_ranges(self.months),
            year=self.years,
            day_of_week=_ranges(weekdays),
            comment=self.comment,
        )


def _years(ranges: Sequence[ScheduleRange]) -> set[int]:
    if not ranges:
        return set(range(FIRST_YEAR, LAST_YEAR + 1))
    return {year for r in ranges for year in range(r.start, r.end + 1, r.step)}


def _ranges(values: Iterable[int]) -> tuple[ScheduleRange, ...]:
    """Sorted values as ranges of consecutive values: {1, 2, 3, 15} → 1-3, 15."""
    runs: list[list[int]] = []
    for value in sorted(set(values)):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return tuple(ScheduleRange(start, end) for start, end in runs)


def _month_end(comment: str, count: int, weekdays: frozenset[int] | None = None) -> list[_Days]:
    """The last `count` days of each month: one calendar per month length, February leap and
    common apart (its years listed, since 2100 is not a leap year)."""
    lengths = [
        ("31-day months", _LONG_MONTHS, 31, ()),
        ("30-day months", _SHORT_MONTHS, 30, ()),
        ("February, leap years", _FEBRUARY, 29, _LEAP_YEARS),
        ("February, common years", _FEBRUARY, 28, _COMMON_YEARS),
    ]
    return [
        _Days(
            f"{comment}: {name}",
            months,
            frozenset(range(last - count + 1, last + 1)),
            weekdays,
            years,
        )
        for name, months, last, years in lengths
    ]


def base_days(schedule: Schedule) -> list[_Days]:
    """The calendars of a schedule, before any DST day is taken out."""
    match schedule:
        case DailySchedule():
            return [_Days("every day")]
        case WeeklySchedule():
            return [
                _Days(f"every {', '.join(schedule.days)}", weekdays=frozenset(schedule.weekdays()))
            ]
        case YearlySchedule():
            # February 29 matches in leap years only: Temporal never runs a day a month lacks.
            return [_Days("every year", frozenset({schedule.month}), frozenset({schedule.day}))]
        case MonthlySchedule() if schedule.days_of_month is not None:
            # Likewise the 31st simply does not match in 30-day months and February.
            return [_Days("days of month", days=frozenset(schedule.days_of_month))]
        case MonthlySchedule() if schedule.on == "last_day":
            return _month_end("last day", 1)
        case MonthlySchedule():
            nth = schedule.nth_weekday()
            assert nth is not None
            n, weekday = nth
            weekdays = frozenset({weekday})
            if n == -1:  # the last 7 days of the month hold each weekday once
                return _month_end(str(schedule.on), 7, weekdays)
            # The n-th weekday of a month is the one among days 7n-6 .. 7n.
            days = frozenset(range(7 * n - 6, 7 * n + 1))
            return [_Days(str(schedule.on), days=days, weekdays=weekdays)]
        case _:
            assert_never(schedule)


def _without(days: _Days, excluded: Iterable[date]) -> list[_Days]:
    """`days` minus some dates, as calendars: the matched dates grouped by year, and years with
    the same excluded (month, day) pairs sharing calendars."""
    hits: dict[int, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    for day in excluded:
        if days.matches(day):
            hits[day.year][day.month].add(day.day)
    if not hits:
        return [days]
    comment = f"{days.comment} (DST days apart)"
    patterns: dict[tuple[tuple[int, frozenset[int]], ...], list[int]] = defaultdict(list)
    for year, months in hits.items():
        patterns[tuple(sorted((m, frozenset(d)) for m, d in months.items()))].append(year)
    parts = [replace(days, comment=comment, years=_ranges(_years(days.years) - hits.keys()))]
    for pattern, years in patterns.items():
        in_years = replace(days, comment=comment, years=_ranges(years))
        parts.append(replace(in_years, months=days.months - {month for month, _ in pattern}))
        parts += [
            replace(in_years, months=frozenset({month}), days=days.days - skipped)
            for month, skipped in pattern
        ]
    return [part for part in parts if part.years and part.months and part.days]


def _one_off(instant: datetime) -> ScheduleIntervalSpec:
    """A run at one absolute instant, immune to DST: Temporal has no one-off times.

    An interval fires at 1970 + offset + k * every, but Temporal computes the next firing with
    a Go division that truncates toward zero, which skips one while the current time is before
    the offset. So the offset is 1 s and `every` the rest: the first firing is the instant;
    its repeats (before 2100 for instants before 2036) fall on second 59, 58… of a minute,
    where the `_OFF_MINUTE` skip drops them.
    """
    return ScheduleIntervalSpec(every=instant - _EPOCH - _SECOND, offset=_SECOND)


def schedule_spec(
    schedule: Schedule, *, timezone: str, from_year: int | None = None
) -> ScheduleSpec:
    """The Temporal `ScheduleSpec` of a schedule, in the workflow's time zone.

    Calendars in `timezone` carry the runs; the days around a UTC offset change from
    `from_year` (default: this year) through 2100 are taken out of them and run as one-off
    intervals at the instant `next_run_times` gives (see the package docstring).
    """
    first_year = max(datetime.now(UTC).year if from_year is None else from_year, FIRST_YEAR)
    special = dst_days(schedule, timezone, first_year)
    calendars = [part for days in base_days(schedule) for part in _without(days, special)]
    return ScheduleSpec(
        calendars=[days.calendar(schedule.at) for days in calendars],
        intervals=[_one_off(instant) for instant in sorted(special.values())],
        skip=[_OFF_MINUTE] if special else [],
        time_zone_name=timezone,
    )

"""`schedule_spec`: the shape of the calendars (their meaning is proven on a dev server)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from temporalio.client import ScheduleRange

from crmflow.definitions import Schedule
from crmflow.schedules import next_run_times, schedule_spec

Build = Callable[..., Schedule]


def spans(ranges: object) -> list[tuple[int, int, int]]:
    return [(r.start, r.end, r.step) for r in ranges]  # type: ignore[attr-defined]


def test_daily_is_one_plain_calendar_in_the_workflow_zone(schedule_of: Build) -> None:
    spec = schedule_spec(schedule_of(every="day", at="08:05"), timezone="Europe/Paris")
    assert spec.time_zone_name == "Europe/Paris"
    assert not spec.cron_expressions and not spec.intervals and not spec.skip
    (cal,) = spec.calendars
    assert (spans(cal.hour), spans(cal.minute), spans(cal.second)) == (
        [(8, 8, 1)],
        [(5, 5, 1)],
        [(0, 0, 1)],
    )
    assert spans(cal.day_of_month) == [(1, 31, 1)] and spans(cal.day_of_week) == [(0, 6, 1)]


def test_weekdays_count_from_sunday(schedule_of: Build) -> None:
    spec = schedule_spec(
        schedule_of(every="week", at="08:00", days=["sun", "mon", "sat"]), timezone="UTC"
    )
    assert spans(spec.calendars[0].day_of_week) == [(0, 1, 1), (6, 6, 1)]


def test_nth_weekday_ands_day_of_month_and_weekday(schedule_of: Build) -> None:
    spec = schedule_spec(schedule_of(every="month", at="09:00", on="third_friday"), timezone="UTC")
    (cal,) = spec.calendars
    assert spans(cal.day_of_month) == [(15, 21, 1)] and spans(cal.day_of_week) == [(5, 5, 1)]


def test_last_day_lists_leap_and_common_years_exactly(schedule_of: Build) -> None:
    spec = schedule_spec(schedule_of(every="month", at="15:00", on="last_day"), timezone="UTC")
    assert not spec.skip
    february = {cal.day_of_month[0].start: cal for cal in spec.calendars if cal.month[0].start == 2}
    assert spans(february[29].year) == [(2000, 2096, 4)]
    common = {y for r in february[28].year for y in range(r.start, r.end + 1, r.step)}
    assert common == {y for y in range(2000, 2101) if not (y % 4 == 0 and y != 2100)}


def test_night_schedule_runs_dst_days_as_one_off_intervals(schedule_of: Build) -> None:
    daily = schedule_of(every="day", at="02:30")
    spec = schedule_spec(daily, timezone="America/New_York", from_year=2027)
    assert len(spec.intervals) == 2 * (2100 - 2027 + 1)  # spring and fall, 2027-2100
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    instants = [epoch + iv.every + (iv.offset or timedelta()) for iv in spec.intervals]
    assert [t.isoformat() for t in instants[:2]] == [
        "2027-03-14T07:30:00+00:00",  # 02:30 does not exist: 03:30 EDT
        "2027-11-07T07:30:00+00:00",  # 02:30 EST: exists once
    ]
    assert all(iv.offset == timedelta(seconds=1) for iv in spec.intervals)
    # The repeats of the one-off intervals, off the whole minute, are skipped.
    (skip,) = spec.skip
    assert spans(skip.second) == [(1, 59, 1)]
    # The other days stay in calendars at 02:30, all of them at second 0.
    assert all(cal.second == (ScheduleRange(0),) for cal in spec.calendars)
    assert len(spec.calendars) < 30


def test_dst_days_start_with_the_current_year(schedule_of: Build) -> None:
    daily = schedule_of(every="day", at="02:30")
    spec = schedule_spec(daily, timezone="Europe/Paris")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = epoch + spec.intervals[0].every + timedelta(seconds=1)
    assert first.year == datetime.now(UTC).year
    after = datetime(first.year, 1, 1, tzinfo=UTC)
    assert first in next_run_times(daily, timezone="Europe/Paris", after=after, count=366)


def test_day_schedules_need_no_dst_entries(schedule_of: Build) -> None:
    for timezone in ("America/New_York", "Europe/Paris", "Australia/Sydney"):
        spec = schedule_spec(schedule_of(every="day", at="08:00"), timezone=timezone)
        assert len(spec.calendars) == 1 and not spec.intervals and not spec.skip

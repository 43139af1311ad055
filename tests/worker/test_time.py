"""The interpreter's pure time arithmetic: windows, pause dates, delay wake times, DST."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from crmflow.definitions import DelayAction, ExecutionWindow, SplitPath
from crmflow.worker._enrollment import choose_path
from crmflow.worker._time import next_allowed, parse_date_value, wake_time, zone_of

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS = ExecutionWindow.model_validate(
    {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "17:00"}
)


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)  # type: ignore[misc]


def allowed(moment: datetime, window=WEEKDAYS, pause=(), zone=PARIS) -> datetime:
    return next_allowed(moment, zone=zone, window=window, pause_dates=pause)


# 2026-12-04 is a Friday; 2026-12-07 a Monday.
@pytest.mark.parametrize(
    ("due", "expected"),
    [
        ((2026, 12, 4, 10, 0), (2026, 12, 4, 10, 0)),  # inside: at once
        ((2026, 12, 4, 16, 59, 59), (2026, 12, 4, 16, 59, 59)),  # just before close
        ((2026, 12, 4, 17, 0), (2026, 12, 7, 9, 0)),  # `to` is exclusive
        ((2026, 12, 4, 17, 0, 20), (2026, 12, 7, 9, 0)),  # Friday evening: Monday
        ((2026, 12, 5, 12, 0), (2026, 12, 7, 9, 0)),  # Saturday
        ((2026, 12, 6, 23, 59), (2026, 12, 7, 9, 0)),  # Sunday night
        ((2026, 12, 8, 8, 59, 59), (2026, 12, 8, 9, 0)),  # before opening
        ((2026, 12, 8, 9, 0), (2026, 12, 8, 9, 0)),  # `from` is inclusive
    ],
)
def test_window_edges(due, expected):
    assert allowed(local(PARIS, *due)) == local(PARIS, *expected)


def test_pause_dates_push_to_the_next_window_day():
    friday_evening = local(PARIS, 2026, 12, 4, 17, 0, 20)
    assert allowed(friday_evening, pause=[date(2026, 12, 7)]) == local(PARIS, 2026, 12, 8, 9, 0)
    assert allowed(friday_evening, pause=[date(2026, 12, 7), date(2026, 12, 8)]) == local(
        PARIS, 2026, 12, 9, 9, 0
    )
    # Inside the window, but on a pause date.
    assert allowed(local(PARIS, 2026, 12, 25, 10), pause=[date(2026, 12, 25)]) == local(
        PARIS, 2026, 12, 28, 9, 0
    )


def test_pause_dates_without_a_window_resume_at_local_midnight():
    due = local(NEW_YORK, 2026, 12, 24, 23, 30)
    pause = [date(2026, 12, 24), date(2026, 12, 25)]
    assert allowed(due, window=None, pause=pause, zone=NEW_YORK) == local(
        NEW_YORK, 2026, 12, 26, 0, 0
    )
    # Not a pause date: at once, whatever the hour.
    assert allowed(due, window=None, pause=[date(2026, 12, 31)], zone=NEW_YORK) == due
    # The same instant is a different local date in another zone.
    assert allowed(due.astimezone(UTC), window=None, pause=[date(2026, 12, 25)], zone=PARIS) == (
        local(PARIS, 2026, 12, 26, 0, 0)
    )


def test_window_is_read_in_the_zone_given():
    # 08:30 in New York is 14:30 in Paris: outside a New York window, inside a Paris one.
    moment = local(NEW_YORK, 2026, 12, 8, 8, 30)
    assert allowed(moment, zone=NEW_YORK) == local(NEW_YORK, 2026, 12, 8, 9, 0)
    assert allowed(moment, zone=PARIS) == moment


@pytest.mark.parametrize(
    ("zone", "day", "opens", "expected_utc"),
    [
        # Spring forward: 02:30 does not exist, the window opens at 03:30 local (RFC 5545).
        (PARIS, date(2027, 3, 28), time(2, 30), datetime(2027, 3, 28, 1, 30, tzinfo=UTC)),
        (NEW_YORK, date(2027, 3, 14), time(2, 30), datetime(2027, 3, 14, 7, 30, tzinfo=UTC)),
        # Fall back: 02:30 Paris / 01:30 New York occur twice, the window opens at the first.
        (PARIS, date(2027, 10, 31), time(2, 30), datetime(2027, 10, 31, 0, 30, tzinfo=UTC)),
        (NEW_YORK, date(2027, 11, 7), time(1, 30), datetime(2027, 11, 7, 5, 30, tzinfo=UTC)),
        # An ordinary 09:00 on DST days keeps its wall time: the UTC instant moves by an hour.
        (PARIS, date(2027, 3, 28), time(9, 0), datetime(2027, 3, 28, 7, 0, tzinfo=UTC)),
        (PARIS, date(2027, 10, 31), time(9, 0), datetime(2027, 10, 31, 8, 0, tzinfo=UTC)),
        (NEW_YORK, date(2027, 3, 14), time(9, 0), datetime(2027, 3, 14, 13, 0, tzinfo=UTC)),
        (NEW_YORK, date(2027, 11, 7), time(9, 0), datetime(2027, 11, 7, 14, 0, tzinfo=UTC)),
    ],
)
def test_window_opening_on_dst_days(zone, day, opens, expected_utc):
    window = ExecutionWindow.model_validate(
        {"days": ["sun"], "from": opens.strftime("%H:%M"), "to": "23:00"}
    )
    the_day_before = datetime.combine(day - timedelta(days=1), time(12), tzinfo=zone)
    assert allowed(the_day_before, window=window, zone=zone) == expected_utc


def test_window_close_on_fall_back_day_is_the_first_occurrence():
    # New York window until 01:30 on fall-back day: 01:40 EDT is after the close (first 01:30).
    window = ExecutionWindow.model_validate({"days": ["sun"], "from": "00:00", "to": "01:30"})
    inside = datetime(2027, 11, 7, 5, 20, tzinfo=UTC)  # 01:20 EDT
    after = datetime(2027, 11, 7, 5, 40, tzinfo=UTC)  # 01:40 EDT
    assert allowed(inside, window=window, zone=NEW_YORK) == inside
    assert allowed(after, window=window, zone=NEW_YORK) == local(NEW_YORK, 2027, 11, 14, 0, 0)


def test_exhaustive_weekday_window_against_a_minute_scan():
    """Over a fortnight around a DST change, in steps of 13 minutes, the answer is the first
    minute a brute-force scan finds allowed."""
    pause = {date(2027, 3, 29)}
    start = datetime(2027, 3, 24, 0, 3, tzinfo=UTC)
    for step in range(0, 14 * 24 * 60, 13):
        moment = start + timedelta(minutes=step)
        got = allowed(moment, pause=pause)
        probe = moment
        while True:
            wall = probe.astimezone(PARIS)
            if (
                wall.date() not in pause
                and wall.weekday() < 5
                and time(9) <= wall.time().replace(tzinfo=None) < time(17)
            ):
                break
            probe = (probe + timedelta(minutes=1)).replace(second=0, microsecond=0)
        assert got == probe, moment


def delay(**fields) -> DelayAction:
    return DelayAction.model_validate({"id": "d", "type": "delay", **fields})


def test_duration_is_elapsed_time_across_dst():
    start = local(PARIS, 2027, 3, 27, 12, 0).astimezone(UTC)  # workflow.now() is UTC
    wake = wake_time(delay(duration="1d"), start, PARIS).at
    assert wake - start == timedelta(days=1)
    assert wake.astimezone(PARIS).hour == 13  # 24 hours later is 13:00 CEST


def test_until_date_without_offset_is_local():
    start = local(PARIS, 2026, 12, 1, 12)
    assert wake_time(delay(until_date="2026-12-04T17:00:20"), start, PARIS).at == local(
        PARIS, 2026, 12, 4, 17, 0, 20
    )
    assert wake_time(delay(until_date="2026-12-04T17:00:00+00:00"), start, PARIS).at == (
        datetime(2026, 12, 4, 17, tzinfo=UTC)
    )


def test_until_weekday_and_until_time():
    friday_noon = local(PARIS, 2026, 12, 4, 12, 0)
    assert wake_time(delay(until_weekday=["mon", "thu"], at="09:00"), friday_noon, PARIS).at == (
        local(PARIS, 2026, 12, 7, 9, 0)
    )
    # Today's time not yet passed: today; passed or exactly now: the next one.
    assert wake_time(delay(until_weekday=["fri"], at="13:00"), friday_noon, PARIS).at == local(
        PARIS, 2026, 12, 4, 13, 0
    )
    assert wake_time(delay(until_weekday=["fri"], at="12:00"), friday_noon, PARIS).at == local(
        PARIS, 2026, 12, 11, 12, 0
    )
    assert wake_time(delay(until_time="09:00"), friday_noon, PARIS).at == local(
        PARIS, 2026, 12, 5, 9, 0
    )
    assert wake_time(delay(until_time="23:00"), friday_noon, PARIS).at == local(
        PARIS, 2026, 12, 4, 23, 0
    )
    # Across spring-forward: the wall time is kept, 02:30 that does not exist becomes 03:30.
    saturday = local(NEW_YORK, 2027, 3, 13, 12)
    assert wake_time(delay(until_time="02:30"), saturday, NEW_YORK).at == datetime(
        2027, 3, 14, 7, 30, tzinfo=UTC
    )
    assert wake_time(delay(until_weekday=["sun"], at="09:00"), saturday, NEW_YORK).at == (
        datetime(2027, 3, 14, 13, 0, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("fields", "value", "expected"),
    [
        ({}, "2026-12-24", local(PARIS, 2026, 12, 24, 0, 0)),  # date only: local midnight
        ({"at": "09:30"}, "2026-12-24", local(PARIS, 2026, 12, 24, 9, 30)),
        ({"offset": "-7d", "at": "09:00"}, "2026-12-24", local(PARIS, 2026, 12, 17, 9, 0)),
        ({"offset": "1d"}, "2026-12-24T15:00:00Z", datetime(2026, 12, 25, 15, tzinfo=UTC)),
        ({}, "2026-12-24T15:00:00", local(PARIS, 2026, 12, 24, 15, 0)),  # naive: local
        ({"at": "08:00"}, "2026-12-24T23:30:00-05:00", local(PARIS, 2026, 12, 25, 8, 0)),
        # Calendar days across DST: 7 days before 09:00 CEST is 09:00 CET.
        ({"offset": "-7d", "at": "09:00"}, "2027-04-01", local(PARIS, 2027, 3, 25, 9, 0)),
    ],
)
def test_until_property(fields, value, expected):
    start = local(PARIS, 2026, 12, 1, 12)
    action = delay(until_property="renewal", **fields)
    assert wake_time(action, start, PARIS, property_value=value).at == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "renewal has no value"),
        ("soon", "renewal is 'soon', not a date"),
        (42, "renewal is 42, not a date"),
        ("2026-13-01", "renewal is '2026-13-01', not a date"),
    ],
)
def test_until_property_without_a_date(value, problem):
    start = local(PARIS, 2026, 12, 1, 12)
    wake = wake_time(delay(until_property="renewal"), start, PARIS, property_value=value)
    assert wake.at is None
    assert wake.problem == problem


def test_parse_date_value_and_zone_fallback():
    assert parse_date_value("2026-12-24", PARIS) == (date(2026, 12, 24), None, None)
    assert zone_of("America/New_York", "Europe/Paris") == NEW_YORK
    assert zone_of("Mars/Olympus", "Europe/Paris") == PARIS
    assert zone_of(None, "Europe/Paris") == PARIS
    assert zone_of("", "UTC") == ZoneInfo("UTC")


def test_split_distribution_over_10000_enrollments():
    """The interpreter draws with workflow.random(), a random.Random seeded per run: over
    10,000 seeds each path's share is within 2 points of its percent."""
    paths = [
        SplitPath(percent=50, next="a"),
        SplitPath(percent=30, next="b"),
        SplitPath(percent=20, next="c"),
    ]
    counts = {"a": 0, "b": 0, "c": 0}
    for seed in range(10_000):
        counts[choose_path(paths, random.Random(seed).random()).next] += 1
    for path in paths:
        assert abs(counts[path.next] / 100 - path.percent) <= 2, counts
    # The same draw always takes the same path (a replay replays the same seed).
    assert choose_path(paths, 0.4999) is paths[0]
    assert choose_path(paths, 0.5) is paths[1]
    assert choose_path(paths, 0.9999) is paths[2]

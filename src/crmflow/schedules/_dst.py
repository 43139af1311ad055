"""The days on which Temporal's calendar arithmetic cannot be trusted: around UTC offset changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from crmflow.definitions import Schedule

from ._next import LAST_YEAR, run_instant, runs_on

_HOUR = timedelta(hours=1)
_STEP = 86_400  # seconds; no zone changes its offset twice within a day


@cache
def offset_changes(timezone: str, first_year: int) -> tuple[tuple[datetime, datetime], ...]:
    """Each UTC offset change from `first_year` through 2100, as the naive wall clock just
    before and just after it (2027-03-14 02:00 → 03:00 in New York)."""
    zone = ZoneInfo(timezone)

    def offset(ts: int) -> timedelta:
        value = datetime.fromtimestamp(ts, zone).utcoffset()
        assert value is not None
        return value

    ts = int(datetime(first_year, 1, 1, tzinfo=UTC).timestamp()) - _STEP
    end = int(datetime(LAST_YEAR + 1, 1, 2, tzinfo=UTC).timestamp())
    changes = []
    old = offset(ts)
    while ts < end:
        new = offset(ts + _STEP)
        if new != old:
            low, high = ts, ts + _STEP  # bisect to the first second with the new offset
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == old else (low, middle)
            at = datetime.fromtimestamp(high, UTC).replace(tzinfo=None)
            changes.append((at + old, at + new))
        ts, old = ts + _STEP, new
    return tuple(changes)


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0)


def _ceil_hour(moment: datetime) -> datetime:
    return _floor_hour(moment + _HOUR - timedelta(seconds=1))


def dst_days(schedule: Schedule, timezone: str, first_year: int) -> dict[date, datetime]:
    """The run days whose run Temporal's calendars may miss, double or misplace, with the run
    instant each must have (`run_instant`).

    Measured on the dev server (see the package docstring): around an offset change Temporal
    skips nonexistent times, fires repeated times twice (zones west of UTC) or only at the
    second occurrence (east of UTC), and fires the hour before a repeated hour a second time
    (Paris 01:30 also at 02:30 CEST): all within an hour of the changed wall-clock span, so a
    day is flagged when its run time falls in that span widened to whole hours and by an hour
    on each side. Its day-of-week test also reads midnight, which Go moves to the day before
    when it does not exist (Havana): a day whose midnight falls in a gap is flagged too.
    """
    zone = ZoneInfo(timezone)
    days: dict[date, datetime] = {}
    for before, after in offset_changes(timezone, first_year):
        start, end = min(before, after), max(before, after)
        low, high = _floor_hour(start) - _HOUR, _ceil_hour(end) + _HOUR
        day = low.date()
        while day <= high.date():
            run, midnight = datetime.combine(day, schedule.at), datetime.combine(day, time())
            if runs_on(schedule, day) and (low <= run < high or before <= midnight < after):
                days[day] = run_instant(schedule, day, zone)
            day += timedelta(days=1)
    return days

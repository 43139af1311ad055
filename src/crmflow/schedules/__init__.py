"""Calendars of scheduled workflows (SPEC §2.4) on Temporal Schedules.

`schedule_spec(schedule, timezone=...)` builds the `ScheduleSpec` of a schedule in code, never
from a cron string; `next_run_times(schedule, timezone=..., after=..., count=...)` computes in
plain Python (zoneinfo) the instants that spec fires, and tests against a real dev server prove
the two agree, run by run, over years. `describe_schedule(schedule, timezone=...)` says it in
words ("every week on fri at 08:00 Europe/Paris").

Calendars (all in the workflow's `settings.timezone`, second 0):

- `day`: every day at HH:MM; `week`: the listed weekdays.
- `month` with `days_of_month`: those days; a day a month lacks (the 31st in April, February)
  does not run that month; it is not moved.
- `month` `on: last_day`: the 31st of the 31-day months, the 30th of the 30-day months,
  February 29 in leap years and February 28 in common years. Temporal calendars only reach
  years 2000-2100, so the leap years are exactly the range 2000-2096 step 4, and the common
  years three step-4 ranges plus 2100: no `skip` is needed.
- `first_<weekday>` … `fourth_<weekday>`: days 1-7, 8-14, 15-21 or 22-28 AND that weekday
  (Temporal requires day of month and day of week to both match).
- `last_<weekday>`: that weekday in the month's last 7 days: 25-31, 24-30, February 23-29 in
  leap years and 22-28 in common years.
- `year`: month and day; February 29 runs in leap years only.

Temporal stops at the end of 2100; so does `next_run_times`.

Daylight saving time. A run's instant is its local wall time read as RFC 5545 (iCalendar) does:

- a wall time that does not exist on spring-forward day runs once, moved forward by the length
  of the gap: 02:30 in New York on 2027-03-14 runs at 03:30 EDT (07:30 UTC), 02:30 in Paris on
  2027-03-28 at 03:30 CEST;
- a wall time that occurs twice on fall-back day runs once, at its first occurrence (still on
  daylight time): 01:30 in New York on 2027-11-07 runs at 01:30 EDT (05:30 UTC), 02:30 in Paris
  on 2027-10-31 at 02:30 CEST (00:30 UTC).

Temporal's own calendars get these days wrong, and differently by zone. Measured on the dev
server (CLI 1.9.1, server 1.32) with daily calendars:

- New York 02:30 on spring-forward day: no run; Paris 02:30: no run; Lord Howe 02:15 (a
  30-minute gap): runs at 02:45.
- New York 01:30 on fall-back day: two runs, 01:30 EDT and 01:30 EST.
- Paris 02:30 on fall-back day: one run, at the second occurrence (02:30 CET); Paris 01:30,
  which exists once: two runs, 01:30 CEST and 02:30 CEST.

A `skip` entry cannot pick one of two occurrences (it matches wall-clock fields, the same for
both), so `schedule_spec` takes each run day near an offset change out of the calendars (its
run time within an hour of the changed wall-clock span, or its midnight inside a gap, which
makes Temporal read the previous day's weekday: measured in Havana) and runs it with a one-off
interval at the exact instant. Temporal has no one-off times: an interval of `every` = the
instant - 1970 - 1 s with `offset` = 1 s fires first at the instant (an offset later than now
would make Temporal's truncating division skip a firing), and its repeats, off the whole
minute, are dropped by one `skip` of seconds 1-59 (every calendar fires at second 0).

This covers the DST days from `from_year` (default: the year the spec is built) through 2100.
A day-time schedule far from the change (08:00 in Paris or New York) has no such day and keeps
its plain calendars; a night-time one (02:30 in New York) carries about 20 calendars and 150
intervals. Offset changes come from Python's tz database while the server reads its own for
the calendars: keep both current, and republish schedules after a zone changes its rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._describe import describe_schedule
from ._next import LAST_YEAR, next_run_times, wall_instant

if TYPE_CHECKING:
    from ._calendars import schedule_spec

__all__ = ["LAST_YEAR", "describe_schedule", "next_run_times", "schedule_spec", "wall_instant"]


def __getattr__(name: str) -> Any:
    # `schedule_spec` builds temporalio's ScheduleSpec: loaded only when asked for, so that the
    # pure users of this package (next runs, descriptions, crmflow.graphs) import no temporalio.
    if name == "schedule_spec":
        from ._calendars import schedule_spec

        return schedule_spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The decisive test: a real dev server fires each schedule exactly at `next_run_times`.

Each case creates a paused schedule from `schedule_spec` (its action never runs), asks the
server for its matching times over years, and compares them run by run with the Python ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.workflowservice.v1 import ListScheduleMatchingTimesRequest
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.client import Schedule as TemporalSchedule

from crmflow.definitions import Schedule
from crmflow.schedules import next_run_times, schedule_spec

_PAGE = 1000  # the server returns at most this many matching times per request


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def server_times(
    client: Client, spec: ScheduleSpec, start: datetime, end: datetime
) -> list[datetime]:
    """The times the server matches in (start, end], from a paused schedule deleted after."""
    schedule_id = f"calendar-test-{uuid.uuid4()}"
    action = ScheduleActionStartWorkflow("Never", id=schedule_id, task_queue="never")
    handle = await client.create_schedule(
        schedule_id, TemporalSchedule(action=action, spec=spec, state=ScheduleState(paused=True))
    )
    times: list[datetime] = []
    try:
        while True:
            request = ListScheduleMatchingTimesRequest(
                namespace=client.namespace,
                schedule_id=schedule_id,
                start_time=_timestamp(start),
                end_time=_timestamp(end),
            )
            response = await client.workflow_service.list_schedule_matching_times(request)
            page = [t.ToDatetime(tzinfo=UTC) for t in response.start_time]
            times += page
            if len(page) < _PAGE:
                return times
            start = page[-1]
    finally:
        await handle.delete()


def python_times(
    schedule: Schedule, timezone: str, start: datetime, end: datetime
) -> list[datetime]:
    most = (end - start).days + 2  # a schedule runs at most once a day
    times = next_run_times(schedule, timezone=timezone, after=start, count=most)
    return [t.astimezone(UTC) for t in times if t <= end]


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("daily", {"every": "day", "at": "08:00"}, "Europe/Paris"),
    ("daily, Tokyo", {"every": "day", "at": "00:00"}, "Asia/Tokyo"),
    ("daily, gap and repeat in New York", {"every": "day", "at": "02:30"}, "America/New_York"),
    ("daily, repeated hour in New York", {"every": "day", "at": "01:30"}, "America/New_York"),
    ("daily, repeated hour in Paris", {"every": "day", "at": "02:30"}, "Europe/Paris"),
    ("daily, hour before Paris's repeat", {"every": "day", "at": "01:30"}, "Europe/Paris"),
    ("daily, 30-minute DST", {"every": "day", "at": "02:15"}, "Australia/Lord_Howe"),
    ("daily, midnight gap", {"every": "day", "at": "00:30"}, "America/Havana"),
    ("daily, southern DST", {"every": "day", "at": "02:30"}, "Australia/Sydney"),
    ("weekly", {"every": "week", "at": "09:00", "days": ["mon", "fri"]}, "America/Chicago"),
    ("weekly, DST Sundays", {"every": "week", "at": "02:30", "days": ["sun"]}, "Europe/Paris"),
    ("weekly, midnight gap", {"every": "week", "at": "10:00", "days": ["sun"]}, "America/Havana"),
    ("days of month", {"every": "month", "at": "08:00", "days_of_month": [1, 15, 31]}, "UTC"),
    (
        "days of month, February",
        {"every": "month", "at": "23:30", "days_of_month": [29, 30, 31]},
        "America/Los_Angeles",
    ),
    ("last day", {"every": "month", "at": "15:00", "on": "last_day"}, "Europe/Paris"),
    ("last day, DST", {"every": "month", "at": "02:30", "on": "last_day"}, "Europe/Lisbon"),
    ("first monday", {"every": "month", "at": "09:00", "on": "first_monday"}, "America/New_York"),
    ("second sunday", {"every": "month", "at": "02:30", "on": "second_sunday"}, "America/New_York"),
    ("third wednesday", {"every": "month", "at": "12:00", "on": "third_wednesday"}, "Asia/Kolkata"),
    ("fourth sunday", {"every": "month", "at": "02:30", "on": "fourth_sunday"}, "Europe/Paris"),
    ("last sunday, DST", {"every": "month", "at": "02:30", "on": "last_sunday"}, "Europe/Paris"),
    ("last monday", {"every": "month", "at": "08:00", "on": "last_monday"}, "UTC"),
    ("last tuesday", {"every": "month", "at": "08:00", "on": "last_tuesday"}, "Pacific/Auckland"),
    ("yearly", {"every": "year", "at": "08:00", "month": 7, "day": 4}, "America/New_York"),
    (
        "yearly, fall-back day",
        {"every": "year", "at": "01:30", "month": 11, "day": 7},
        "America/New_York",
    ),
    (
        "yearly, February 29",
        {"every": "year", "at": "08:00", "month": 2, "day": 29},
        "Europe/Paris",
    ),
]


@pytest.mark.parametrize(("fields", "timezone"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_server_fires_at_next_run_times(
    dev_server_client: Client,
    schedule_of: Callable[..., Schedule],
    fields: dict[str, Any],
    timezone: str,
) -> None:
    schedule = schedule_of(**fields)
    spec = schedule_spec(schedule, timezone=timezone, from_year=2027)
    # Three years from 2027 (a leap year inside); February 29 needs longer to run twice.
    years = 9 if fields.get("day") == 29 else 3
    start, end = datetime(2027, 1, 1, tzinfo=UTC), datetime(2027 + years, 1, 1, tzinfo=UTC)
    expected = python_times(schedule, timezone, start, end)
    assert expected, "the window should hold runs"
    assert await server_times(dev_server_client, spec, start, end) == expected


async def test_one_off_repeats_are_dropped_through_2100(
    dev_server_client: Client, schedule_of: Callable[..., Schedule]
) -> None:
    """The one-off DST intervals of 2027-2035 repeat in 2084-2100, off the whole minute: none
    of them runs, and the runs end with 2100."""
    schedule = schedule_of(every="day", at="01:30")
    spec = schedule_spec(schedule, timezone="America/New_York", from_year=2027)
    start, end = datetime(2083, 1, 1, tzinfo=UTC), datetime(2102, 1, 1, tzinfo=UTC)
    found = await server_times(dev_server_client, spec, start, end)
    assert found == python_times(schedule, "America/New_York", start, end)
    assert found[-1].isoformat() == "2100-12-31T06:30:00+00:00"


@pytest.mark.parametrize(
    ("timezone", "hour", "day", "expected"),
    [
        # Spring forward: the nonexistent 02:30 is skipped.
        ("America/New_York", 2, "2027-03-14", []),
        ("Europe/Paris", 2, "2027-03-28", []),
        # Fall back: New York fires both 01:30s; Paris only the second 02:30 ...
        ("America/New_York", 1, "2027-11-07", ["01:30:00-04:00", "01:30:00-05:00"]),
        ("Europe/Paris", 2, "2027-10-31", ["02:30:00+01:00"]),
        # ... and fires its 01:30, which exists once, a second time an hour later.
        ("Europe/Paris", 1, "2027-10-31", ["01:30:00+02:00", "02:30:00+02:00"]),
    ],
)
async def test_plain_calendars_get_dst_days_wrong(
    dev_server_client: Client, timezone: str, hour: int, day: str, expected: list[str]
) -> None:
    """What Temporal does with a plain daily calendar, hence the one-off runs on DST days."""
    calendar = ScheduleCalendarSpec(hour=(ScheduleRange(hour),), minute=(ScheduleRange(30),))
    spec = ScheduleSpec(calendars=[calendar], time_zone_name=timezone)
    zone = ZoneInfo(timezone)
    start = datetime.fromisoformat(day).replace(tzinfo=zone)
    found = await server_times(dev_server_client, spec, start, start + timedelta(days=1))
    assert [t.astimezone(zone).isoformat()[11:] for t in found] == expected

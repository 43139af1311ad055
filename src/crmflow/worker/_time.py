"""Time arithmetic of the interpreter, pure: execution windows, pause dates and delay wake times.

No I/O and no clock: every function takes the instant it reasons from (the workflow's
`workflow.now()`) and returns aware datetimes, so the same inputs always give the same answer
(replays) and unit tests cover the edges exhaustively. Local wall times become instants with the
rule the schedules use (`crmflow.schedules._next.wall_instant`, RFC 5545): a wall time that does
not exist on spring-forward day is moved forward by the gap (02:30 → 03:30), one that occurs
twice on fall-back day is its first occurrence.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.definitions import DelayAction, ExecutionWindow
from crmflow.schedules import wall_instant as _wall

_DAY = timedelta(days=1)


def wall_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time (`crmflow.schedules` rule). In UTC because Python
    never finds an aware datetime inside a repeated hour equal to one of another zone."""
    return _wall(day, at, zone).astimezone(UTC)


def zone_of(name: str | None, fallback: str) -> ZoneInfo:
    """The zone named `name` if it is a valid IANA name, else `fallback` (the workflow's)."""
    if isinstance(name, str) and name.strip():
        try:
            return ZoneInfo(name.strip())
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(fallback)


def next_allowed(
    moment: datetime,
    *,
    zone: ZoneInfo,
    window: ExecutionWindow | None,
    pause_dates: Iterable[date] = (),
) -> datetime:
    """The first instant at or after `moment` at which an action may run: inside the window
    (`from` inclusive, `to` exclusive, on its days) and not on a pause date, both in `zone`.
    Returns `moment` itself (in UTC) when it is allowed."""
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    moment = moment.astimezone(UTC)
    paused = frozenset(pause_dates)
    day = moment.astimezone(zone).date()
    # Each pause date can push the answer by at most a week of window days.
    for _ in range(7 * (len(paused) + 2)):
        if day not in paused and (window is None or day.weekday() in window.weekdays()):
            if window is None:
                first = day == moment.astimezone(zone).date()
                return moment if first else wall_instant(day, time(0), zone)
            opens, closes = (
                wall_instant(day, window.from_, zone),
                wall_instant(day, window.to, zone),
            )
            if moment < opens:
                return opens
            if moment < closes:
                return moment
        day += _DAY
    raise ValueError("no allowed moment within the pause dates and the window")


@dataclass(frozen=True)
class Wake:
    """When a delay ends, or why it continues at once (`at` None)."""

    at: datetime | None
    problem: str | None = None


def parse_date_value(value: Any, zone: ZoneInfo) -> tuple[date, time | None, datetime | None]:
    """A property value as (local date, local time or None for a date-only value, instant or
    None). Raises ValueError when it is not an ISO date or datetime."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not an ISO date or datetime")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if len(text) == 10:
        return date.fromisoformat(text), None, None
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        instant = wall_instant(parsed.date(), parsed.time(), zone)
    else:
        instant = parsed.astimezone(UTC)
    local = instant.astimezone(zone)
    return local.date(), local.time(), instant


def wake_time(
    action: DelayAction, now: datetime, zone: ZoneInfo, *, property_value: Any = None
) -> Wake:
    """When `action` ends, for a delay starting at `now` in `zone` (`property_value`: the value
    of `until_property`, read by an activity)."""
    match action.kind:
        case "duration":
            assert action.duration is not None
            return Wake(now.astimezone(UTC) + action.duration)
        case "until_date":
            assert action.until_date is not None
            value = action.until_date
            if value.tzinfo is None:  # without an offset: the workflow's (or record's) zone
                return Wake(wall_instant(value.date(), value.time(), zone))
            return Wake(value.astimezone(UTC))
        case "until_property":
            name = action.until_property
            if property_value is None:
                return Wake(None, f"{name} has no value")
            try:
                day, clock, instant = parse_date_value(property_value, zone)
            except ValueError:
                return Wake(None, f"{name} is {property_value!r}, not a date")
            offset = action.offset or timedelta(0)
            if action.at is not None or instant is None:
                # Calendar arithmetic on the local date: "-7d at 09:00" is 09:00 local a week
                # earlier, whatever the DST changes in between. A date-only value without `at`
                # means midnight.
                base = datetime.combine(day, action.at or clock or time(0)) + offset
                if action.at is not None:
                    base = datetime.combine(base.date(), action.at)
                return Wake(wall_instant(base.date(), base.time(), zone))
            return Wake(instant + offset)
        case "until_weekday":
            assert action.at is not None
            return Wake(_next_at(now, zone, action.at, set(action.weekdays())))
        case "until_time":
            assert action.until_time is not None
            return Wake(_next_at(now, zone, action.until_time, set(range(7))))
    raise ValueError(f"unknown delay kind {action.kind}")


def _next_at(now: datetime, zone: ZoneInfo, at: time, weekdays: set[int]) -> datetime:
    """The first wall time `at` strictly after `now` on one of `weekdays`."""
    day = now.astimezone(zone).date() - _DAY  # a moved-forward time may land on the next day
    for _ in range(16):
        if day.weekday() in weekdays:
            candidate = wall_instant(day, at, zone)
            if candidate > now:
                return candidate
        day += _DAY
    raise AssertionError("unreachable: every week has each weekday")


def show(moment: datetime, zone: ZoneInfo) -> str:
    """An instant as local ISO text with its offset (how steps and simulate print times)."""
    return moment.astimezone(zone).isoformat(timespec="seconds")

"""`crmflow simulate` end to end, and through it the time semantics of the interpreter: each
simulation runs the real enrollment workflow on its own time-skipping test server with a
throwaway SQLite store, from a chosen start, so windows, pause dates, DST days and delays are
checked at exact instants."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from ruamel.yaml import YAML

from crmflow.schedules._dst import offset_changes
from crmflow.services import simulate as _simulate
from crmflow.services.simulate import SimulatedEvent, parse_event

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS = {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "17:00"}


def write_yaml(path: Path, defn: dict[str, Any]) -> Path:
    with path.open("w") as handle:
        YAML().dump(defn, handle)
    return path


def definition(actions: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    return {
        "key": "timing",
        "name": "Timing",
        "enrollment": {"trigger": "manual"},
        "actions": actions,
        "settings": {"timezone": "Europe/Paris", **settings},
    }


EMAIL = {"id": "hello", "type": "send_email", "subject": "Hi", "body": "."}


def next_weekday(weekday: int, zone: ZoneInfo = PARIS, *, after_days: int = 2) -> date:
    """A date with this weekday at least `after_days` from today (simulations start ahead)."""
    day = datetime.now(zone).date() + timedelta(days=after_days)
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return day


def at(day: date, clock: str, zone: ZoneInfo = PARIS) -> datetime:
    return datetime.combine(day, time.fromisoformat(clock), tzinfo=zone)


async def run(
    tmp_path: Path,
    defn: dict[str, Any],
    start: datetime | None,
    *,
    properties: dict[str, Any] | None = None,
    events: list[SimulatedEvent] = (),  # type: ignore[assignment]
) -> _simulate.Simulation:
    path = write_yaml(tmp_path / "timing.yaml", defn)
    return await _simulate.simulate(
        path,
        properties={"email": "ann@example.com", **(properties or {})},
        start=start.isoformat() if start else None,
        events=events,
    )


def step(result: _simulate.Simulation, action_id: str) -> _simulate.SimulatedStep:
    [found] = [s for s in result.steps if s.action_id == action_id]
    return found


def seconds(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


# ---------------------------------------------------------------- windows and pause dates


async def test_friday_evening_email_goes_out_monday_or_tuesday_after_a_pause_date(tmp_path):
    friday = next_weekday(4)
    monday = friday + timedelta(days=3)
    defn = definition([EMAIL], execution_window=WEEKDAYS)
    result = await run(tmp_path, defn, at(friday, "17:00:20"))
    hello = step(result, "hello")
    assert seconds(hello.at) == seconds(at(monday, "09:00"))
    assert "held by the execution window" in hello.outcome
    assert result.status == "completed"

    paused = definition([EMAIL], execution_window=WEEKDAYS, pause_dates=[monday.isoformat()])
    result = await run(tmp_path, paused, at(friday, "17:00:20"))
    assert seconds(step(result, "hello").at) == seconds(at(monday + timedelta(days=1), "09:00"))


async def test_just_before_close_runs_at_once_and_weekend_waits_for_monday(tmp_path):
    friday = next_weekday(4)
    defn = definition([EMAIL], execution_window=WEEKDAYS)
    result = await run(tmp_path, defn, at(friday, "16:59:50"))
    hello = step(result, "hello")
    assert at(friday, "16:59:50") <= hello.at < at(friday, "17:00")
    assert "held" not in hello.outcome

    result = await run(tmp_path, defn, at(friday + timedelta(days=1), "10:00"))
    assert seconds(step(result, "hello").at) == seconds(at(friday + timedelta(days=3), "09:00"))


async def test_delays_and_branches_are_not_moved_by_the_window(tmp_path):
    saturday = next_weekday(5)
    actions = [
        {"id": "wait", "type": "delay", "duration": "1h"},
        {
            "id": "route",
            "type": "branch",
            "branches": [
                {"name": "any", "when": {"property": "email", "op": "known"}, "next": "hello"}
            ],
        },
        EMAIL,
    ]
    result = await run(
        tmp_path, definition(actions, execution_window=WEEKDAYS), at(saturday, "10:00")
    )
    assert seconds(step(result, "wait").at) == seconds(at(saturday, "10:00"))
    assert seconds(step(result, "route").at) == seconds(at(saturday, "11:00"))
    assert seconds(step(result, "hello").at) == seconds(at(saturday + timedelta(days=2), "09:00"))


def dst_day(zone: ZoneInfo, *, spring: bool) -> date:
    today = datetime.now(zone).date()
    for before, after in offset_changes(zone.key, today.year):
        if before.date() > today + timedelta(days=2) and (after > before) == spring:
            return before.date()
    raise AssertionError("no DST change ahead")


@pytest.mark.parametrize(
    ("zone", "spring", "opens"),
    [
        (PARIS, True, "02:30"),  # 02:00 -> 03:00: 02:30 does not exist
        (NEW_YORK, True, "02:30"),
        (PARIS, False, "02:30"),  # 03:00 -> 02:00: 02:30 happens twice
        (NEW_YORK, False, "01:30"),  # 02:00 -> 01:00: 01:30 happens twice
    ],
)
async def test_window_opening_on_dst_days(tmp_path, zone, spring, opens):
    day = dst_day(zone, spring=spring)
    weekday = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][day.weekday()]
    window = {"days": [weekday], "from": opens, "to": "23:00"}
    defn = definition([EMAIL], execution_window=window, timezone=zone.key)
    result = await run(tmp_path, defn, at(day - timedelta(days=1), "12:00", zone))
    sent = step(result, "hello").at
    # RFC 5545: a nonexistent time is moved forward by the gap, a repeated one is the first.
    expected = datetime.combine(day, time.fromisoformat(opens), tzinfo=zone).astimezone(UTC)
    assert seconds(sent) == expected
    if spring:
        assert sent.astimezone(zone).strftime("%H:%M") == "03:30"
    else:
        assert sent.astimezone(zone).dst()  # the first occurrence: still on daylight time


async def test_duration_delay_is_elapsed_time_across_spring_forward(tmp_path):
    day = dst_day(PARIS, spring=True)
    actions = [{"id": "wait", "type": "delay", "duration": "1d"}, EMAIL]
    result = await run(tmp_path, definition(actions), at(day - timedelta(days=1), "12:00"))
    assert seconds(step(result, "hello").at) == seconds(at(day, "13:00"))  # 24 h later


async def test_per_record_time_zone_and_its_fallback(tmp_path):
    tuesday = next_weekday(1)
    defn = definition([EMAIL], execution_window=WEEKDAYS, timezone_property="tz")
    # 08:00 in Paris is 02:00 in New York: a New York record waits for 09:00 New York time.
    start = at(tuesday, "08:00")
    result = await run(tmp_path, defn, start, properties={"tz": "America/New_York"})
    assert seconds(step(result, "hello").at) == seconds(at(tuesday, "09:00", NEW_YORK))
    for invalid in ({"tz": "Mars/Olympus"}, {}):
        result = await run(tmp_path, defn, start, properties=invalid)
        assert seconds(step(result, "hello").at) == seconds(at(tuesday, "09:00"))


async def test_pause_dates_apply_to_a_scheduled_workflow(tmp_path):
    """A scheduled workflow's enrollments run through the same interpreter: a pause date holds
    its actions to the next day (windows stay refused for schedules by validation)."""
    tuesday = next_weekday(1)
    defn = definition([EMAIL], pause_dates=[tuesday.isoformat()])
    defn["enrollment"] = {
        "trigger": "schedule",
        "criteria": {"property": "email", "op": "known"},
        "schedule": {"every": "day", "at": "08:00"},
    }
    result = await run(tmp_path, defn, at(tuesday, "08:00"))
    hello = step(result, "hello")
    assert seconds(hello.at) == seconds(at(tuesday + timedelta(days=1), "00:00"))
    assert "held by a pause date" in hello.outcome


# ---------------------------------------------------------------------------- every delay


async def test_every_delay_kind(tmp_path):
    monday = next_weekday(0)
    start = at(monday, "10:00")
    renewal = (monday + timedelta(days=10)).isoformat()
    actions = [
        {"id": "d1", "type": "delay", "duration": "1d12h"},  # Tue 22:00
        {"id": "d2", "type": "delay", "until_time": "09:00"},  # Wed 09:00
        {"id": "d3", "type": "delay", "until_weekday": ["fri"], "at": "14:30"},  # Fri 14:30
        {"id": "d4", "type": "delay", "until_property": "renewal", "offset": "-2d", "at": "08:15"},
        {"id": "d5", "type": "delay", "until_date": f"{renewal}T11:00:00"},
        EMAIL,
    ]
    result = await run(tmp_path, definition(actions), start, properties={"renewal": renewal})
    ats = {s.action_id: seconds(s.at) for s in result.steps}
    assert ats["d1"] == seconds(start)
    assert ats["d2"] == seconds(at(monday + timedelta(days=1), "22:00"))
    assert ats["d3"] == seconds(at(monday + timedelta(days=2), "09:00"))
    assert ats["d4"] == seconds(at(monday + timedelta(days=4), "14:30"))
    assert ats["d5"] == seconds(at(monday + timedelta(days=8), "08:15"))
    assert ats["hello"] == seconds(at(monday + timedelta(days=10), "11:00"))
    assert step(result, "d4").outcome.startswith("waited until")


@pytest.mark.parametrize(
    ("renewal", "outcome"),
    [
        ("2020-01-01", "date 2020-01-01T00:00:00+01:00 already past: continued at once"),
        (None, "renewal has no value: continued at once"),
        ("next week", "renewal is 'next week', not a date: continued at once"),
    ],
)
async def test_until_property_past_missing_or_unparsable_continues_at_once(
    tmp_path, renewal, outcome
):
    actions = [{"id": "wait", "type": "delay", "until_property": "renewal"}, EMAIL]
    properties = {} if renewal is None else {"renewal": renewal}
    result = await run(tmp_path, definition(actions), None, properties=properties)
    assert step(result, "wait").outcome == outcome
    assert seconds(step(result, "hello").at) - seconds(step(result, "wait").at) < timedelta(
        seconds=5
    )


# ---------------------------------------------------------------- waits, goals, events


WAIT = {
    "id": "opened",
    "type": "wait_for_event",
    "event": "email_opened",
    "where": {"campaign": "welcome"},
    "timeout": "3d",
    "on_timeout": "nudge",
}
FLOW = [
    WAIT,
    {"id": "thanks", "type": "create_task", "title": "Thank them", "next": "end"},
    {"id": "nudge", "type": "send_email", "subject": "Did you see it?", "body": "."},
]


async def test_wait_for_event_continues_on_the_event(tmp_path):
    monday = next_weekday(0)
    events = [
        parse_event("1h:email_opened:campaign=other"),  # `where` does not match
        parse_event("5h:page_viewed"),  # not the event
        parse_event("1d2h:email_opened:campaign=welcome"),
    ]
    result = await run(tmp_path, definition(FLOW), at(monday, "10:00"), events=events)
    assert [s.action_id for s in result.steps] == ["opened", "thanks"]
    assert step(result, "opened").outcome == "event email_opened received"
    assert seconds(step(result, "thanks").at) == seconds(at(monday + timedelta(days=1), "12:00"))


async def test_wait_for_event_times_out_to_on_timeout(tmp_path):
    monday = next_weekday(0)
    result = await run(tmp_path, definition(FLOW), at(monday, "10:00"))
    assert [s.action_id for s in result.steps] == ["opened", "nudge"]
    assert step(result, "opened").outcome == "no email_opened within 3d: -> nudge"
    assert seconds(step(result, "nudge").at) == seconds(at(monday + timedelta(days=3), "10:00"))


async def test_an_event_before_the_wait_does_not_count(tmp_path):
    monday = next_weekday(0)
    actions = [{"id": "first", "type": "delay", "duration": "1d"}, *FLOW]
    events = [parse_event("2h:email_opened:campaign=welcome")]
    result = await run(tmp_path, definition(actions), at(monday, "10:00"), events=events)
    assert [s.action_id for s in result.steps] == ["first", "opened", "nudge"]


@pytest.mark.parametrize(
    "wait",
    [
        {"id": "w", "type": "delay", "duration": "5d"},
        {"id": "w", "type": "delay", "until_weekday": ["sun"], "at": "09:00"},
        {"id": "w", "type": "wait_for_event", "event": "never"},
        {"id": "w", "type": "wait_for_event", "event": "never", "timeout": "5d"},
    ],
)
async def test_goal_met_during_any_wait(tmp_path, wait):
    monday = next_weekday(0)
    defn = definition([wait, EMAIL])
    defn["goal"] = {"criteria": {"event": "demo_booked"}}
    result = await run(tmp_path, defn, at(monday, "10:00"), events=[parse_event("3h:demo_booked")])
    assert result.status == "goal_met"
    assert [s.action_id for s in result.steps] == ["w"]
    assert step(result, "w").outcome == "interrupted: goal_met"


async def test_goal_met_while_held_by_the_window(tmp_path):
    saturday = next_weekday(5)
    defn = definition([EMAIL], execution_window=WEEKDAYS)
    defn["goal"] = {"criteria": {"event": "demo_booked"}}
    result = await run(
        tmp_path, defn, at(saturday, "10:00"), events=[parse_event("1h:demo_booked")]
    )
    assert result.status == "goal_met"
    assert result.steps == []


async def test_without_an_event_or_timeout_the_simulation_ends_at_its_horizon(tmp_path):
    defn = definition([{"id": "w", "type": "wait_for_event", "event": "never"}, EMAIL])
    path = write_yaml(tmp_path / "forever.yaml", defn)
    result = await _simulate.simulate(path, properties={}, horizon=timedelta(days=60), events=[])
    assert (result.status, result.reason) == ("unenrolled", "simulation horizon")


# ---------------------------------------------------------------------------- the CLI


def crmflow(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "crmflow"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_simulate_prints_every_step_and_json(tmp_path):
    friday = next_weekday(4)
    monday = friday + timedelta(days=3)
    defn = definition([EMAIL], execution_window=WEEKDAYS, pause_dates=[monday.isoformat()])
    path = write_yaml(tmp_path / "window.yaml", defn)
    start = f"{friday.isoformat()}T17:00:20"
    human = crmflow(
        "simulate", str(path), "--set", "email=ann@example.com", "--start", start, cwd=tmp_path
    )
    assert human.returncode == 0, human.stderr
    tuesday = monday + timedelta(days=1)
    expected = at(tuesday, "09:00")  # CET, or CEST in summer
    assert f"{expected:%a %Y-%m-%d %H:%M:%S %Z}  hello (send_email): email to ann@example.com" in (
        human.stdout
    )
    assert "status: completed" in human.stdout
    as_json = crmflow(
        "simulate",
        str(path),
        "--set",
        "email=ann@example.com",
        "--start",
        start,
        "--json",
        cwd=tmp_path,
    )
    assert as_json.returncode == 0, as_json.stderr
    [hello] = json.loads(as_json.stdout)
    assert set(hello) == {"action_id", "type", "at", "outcome"}
    assert hello["at"] == expected.isoformat()
    # Nothing was written where the command ran: the store was a throwaway one.
    assert not (tmp_path / ".crmflow").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.yaml"], "missing.yaml"),
        (["window.yaml", "--set", "oops"], "oops: expected PROP=VALUE or PROP:=JSON"),
        (["window.yaml", "--event", "soon:opened"], "--event soon:opened: invalid duration"),
        (["window.yaml", "--event", "2h"], "--event 2h: expected OFFSET:NAME"),
        (["window.yaml", "--start", "tomorrow"], "--start tomorrow: not an ISO date or datetime"),
        (["window.yaml", "--start", "2020-01-01T09:00"], "--start 2020-01-01T09:00: in the past"),
    ],
)
def test_cli_simulate_bad_input(tmp_path, args, message):
    write_yaml(tmp_path / "window.yaml", definition([EMAIL]))
    found = crmflow("simulate", *args, cwd=tmp_path)
    assert found.returncode == 2
    assert message in found.stderr
    assert len(found.stderr.strip().splitlines()) == 1, found.stderr
    assert "Traceback" not in found.stderr


# ---------------------------------------------------------------- time-based goals and exits


async def test_a_goal_that_time_meets_is_judged_at_simulated_time(tmp_path):
    monday = next_weekday(0)
    start = at(monday, "10:00")
    demo = start + timedelta(days=3)
    defn = definition([{"id": "w", "type": "delay", "duration": "10d"}, EMAIL])
    # Met once the demo date has come (within the last 7 days of simulated time).
    defn["goal"] = {"criteria": {"property": "demo_date", "op": "within_last", "value": "7d"}}
    result = await run(tmp_path, defn, start, properties={"demo_date": demo.isoformat()})
    assert result.status == "goal_met"
    assert [s.action_id for s in result.steps] == ["w"]
    assert step(result, "w").outcome == "interrupted: goal_met"


async def test_an_unenroll_when_that_time_turns_true_ends_the_delay(tmp_path):
    monday = next_weekday(0)
    start = at(monday, "10:00")
    trial_end = (start + timedelta(days=2)).date().isoformat()
    defn = definition(
        [{"id": "w", "type": "delay", "duration": "30d"}, EMAIL],
        unenroll_when={"property": "trial_end", "op": "more_than_ago", "value": "1d"},
    )
    result = await run(tmp_path, defn, start, properties={"trial_end": trial_end})
    assert (result.status, result.reason) == ("unenrolled", "unenroll_when matched")
    assert [s.action_id for s in result.steps] == ["w"]
    assert step(result, "w").outcome == "interrupted: unenrolled"

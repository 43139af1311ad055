"""Scheduled workflows end to end against a real Temporal dev server (the time-skipping server has
no Schedules): the Temporal Schedule through activation, publish and deactivation, and runs —
started by hand, and by the Schedule itself — that enroll exactly the matching records.

Each schedule runs on a weekday three days from today, so none fires by itself during a test;
runs are started with `schedule --run-now` or the Schedule's own `trigger()`. Waits are bounded
polls, never sleeps.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter
from temporalio.client import (
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    ScheduleRange,
)
from temporalio.service import RPCError

from crmflow.definitions import WEEKDAYS, Schedule
from crmflow.schedules import next_run_times, schedule_spec

Cli = Any  # conftest.Cli (conftest modules are not importable by name)
DevEnv = Any  # conftest.DevEnv
Write = Callable[[dict[str, Any]], Path]

TIMEZONE = "Europe/Paris"
BIG_DEALS = {"property": "amount", "op": "gte", "value": 1000}
SCHEDULE: TypeAdapter[Any] = TypeAdapter(Schedule)


def unique_key(name: str) -> str:
    # One dev server serves every test: schedule and workflow ids must not meet another test's.
    return f"{name}-{uuid.uuid4().hex[:6]}"


def quiet_day(offset: int = 3) -> str:
    """A weekday `offset` days from today (Paris): a schedule on it does not fire during tests."""
    return WEEKDAYS[(datetime.now(ZoneInfo(TIMEZONE)).weekday() + offset) % 7]


def weekly_deals(
    key: str, *, days: list[str] | None = None, at: str = "08:00", delay: str | None = None
) -> dict[str, Any]:
    """Every week, enroll the deals of 1000 or more; with `delay`, each enrollment waits first."""
    actions: list[dict[str, Any]] = [
        {"id": "mark", "type": "set_property", "property": "reviewed", "value": "yes"}
    ]
    if delay is not None:
        actions.insert(0, {"id": "wait", "type": "delay", "duration": delay})
    return {
        "key": key,
        "name": "Weekly deal review",
        "object_type": "deal",
        "enrollment": {
            "trigger": "schedule",
            "criteria": BIG_DEALS,
            "schedule": {"every": "week", "at": at, "days": days or [quiet_day()]},
        },
        "settings": {"timezone": TIMEZONE},
        "actions": actions,
    }


def add_deals(cli: Cli, amounts: dict[str, int | None]) -> None:
    for record_id, amount in amounts.items():
        values = [f"amount:={amount}"] if amount is not None else ["stage=new"]
        cli("records", "set", record_id, *values, "--object", "deal")


def calendar_of(definition: dict[str, Any]) -> Any:
    return SCHEDULE.validate_python(definition["enrollment"]["schedule"])


def expected_runs(definition: dict[str, Any], count: int) -> list[datetime]:
    return next_run_times(
        calendar_of(definition), timezone=TIMEZONE, after=datetime.now(UTC), count=count
    )


def counts(result: dict[str, Any]) -> tuple[int, int, int, int]:
    return result["matched"], result["enrolled"], result["skipped"], result["failed"]


def enrolled_ids(cli: Cli, key: str) -> list[str]:
    return sorted(e["record_id"] for e in cli.json("enrollments", key))


def wait_until_ended(cli: Cli, key: str, eventually: Any) -> None:
    eventually(
        lambda: not cli.json("enrollments", key, "--status", "running"),
        what=f"the enrollments of {key} to end",
    )


@pytest.fixture
def schedules(temporal_dev_env: DevEnv) -> Iterator[Callable[[str], ScheduleHandle]]:
    """`schedules(key)`: the handle of a workflow's Temporal Schedule; every Schedule a test
    touched is deleted after it (the dev server outlives the test)."""
    client = temporal_dev_env.env.client
    handles: list[ScheduleHandle] = []

    def handle(key: str) -> ScheduleHandle:
        found = client.get_schedule_handle(f"crmflow-schedule:{key}")
        handles.append(found)
        return found

    yield handle
    for found in handles:
        with contextlib.suppress(RPCError):  # already gone
            temporal_dev_env.background.run(found.delete())


def describe(env: DevEnv, handle: ScheduleHandle) -> ScheduleDescription:
    return env.background.run(handle.describe())


def ranges(values: Any) -> list[tuple[int, int, int]]:
    """Calendar ranges as (start, end, step), whichever way the server fills defaults in."""
    return [(r.start, max(r.end, r.start), r.step or 1) for r in values]


def calendars(spec: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (ranges(c.hour), ranges(c.minute), ranges(c.day_of_week), ranges(c.day_of_month))
        for c in spec.calendars
    )


# ---------------------------------------------------------------- a new user's path


def test_weekly_schedule_next_runs_and_run_now(
    e2e_cli: Cli,
    temporal_dev_env: DevEnv,
    schedules: Callable[[str], ScheduleHandle],
    write_definition: Write,
    eventually: Any,
) -> None:
    cli = e2e_cli
    key = unique_key("weekly")
    definition = weekly_deals(key)
    add_deals(cli, {"big": 5000, "edge": 1000, "small": 10, "blank": None})
    cli("publish", str(write_definition(definition)))

    # Next run times are computed before activation, in the workflow's zone with its offset.
    upcoming = cli.json("schedule", key, "--next", "4")
    assert [datetime.fromisoformat(t) for t in upcoming] == expected_runs(definition, 4)
    assert all(t.endswith(("+01:00", "+02:00")) and "T08:00:00" in t for t in upcoming)
    shown = cli.json("show", key)["schedule"]
    day = definition["enrollment"]["schedule"]["days"][0]
    assert shown["description"] == f"every week on {day} at 08:00 {TIMEZONE}"
    assert (shown["state"], shown["paused"], shown["last_run"]) == ("missing", None, None)

    assert cli("activate", key).stdout == f"{key} is active\n"
    description = describe(temporal_dev_env, schedules(key))
    assert not description.schedule.state.paused
    assert description.schedule.spec.time_zone_name == TIMEZONE
    assert calendars(description.schedule.spec) == calendars(
        schedule_spec(calendar_of(definition), timezone=TIMEZONE)
    )
    [calendar] = description.schedule.spec.calendars
    weekday = (WEEKDAYS.index(day) + 1) % 7  # Temporal counts from Sunday
    assert ranges(calendar.day_of_week) == ranges([ScheduleRange(weekday)])
    assert description.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert description.schedule.policy.catchup_window == timedelta(hours=6)
    planned = [datetime.fromisoformat(t) for t in upcoming]
    assert description.info.next_action_times[:4] == planned

    listed = {w["key"]: w for w in cli.json("workflows")}[key]["schedule"]
    assert (listed["state"], listed["paused"]) == ("active", False)
    assert [datetime.fromisoformat(t) for t in listed["next_runs"]] == planned[:3]
    assert all(t.endswith(("+01:00", "+02:00")) for t in listed["next_runs"])
    [row] = [line for line in cli("workflows").stdout.splitlines() if "every week" in line]
    assert row.split()[:1] == [key] and "  active  " in row
    assert planned[0].astimezone(ZoneInfo(TIMEZONE)).strftime("%a %Y-%m-%d 08:00 %Z") in row

    # A run enrolls exactly the matching records, now.
    first = cli.json("schedule", key, "--run-now")
    assert counts(first) == (2, 2, 0, 0) and first["version"] == 1
    assert enrolled_ids(cli, key) == ["big", "edge"]
    assert {e["source"] for e in cli.json("enrollments", key)} == {"schedule"}
    wait_until_ended(cli, key, eventually)
    assert cli.json("records", "show", "big", "--object", "deal")["properties"]["reviewed"] == "yes"
    assert "reviewed" not in cli.json("records", "show", "small", "--object", "deal")["properties"]

    # The next run enrolls them again: their enrollments ended. A record that has come to match
    # since is enrolled too; one that no longer matches is not.
    add_deals(cli, {"small": 2500, "edge": 999})
    again = cli("schedule", key, "--run-now").stdout
    assert again == f"{key}: run done: 2 matched, 2 enrolled, 0 skipped, 0 failed\n"
    assert enrolled_ids(cli, key) == ["big", "big", "edge", "small"]

    last = cli.json("show", key)["schedule"]["last_run"]
    assert (last["trigger"], last["status"], counts(last)) == ("manual", "completed", (2, 2, 0, 0))
    human = cli("show", key).stdout
    assert f"schedule   every week on {day} at 08:00 {TIMEZONE}" in human
    assert "state      active; next runs " in human
    assert "(manual, completed): 2 matched, 2 enrolled, 0 skipped, 0 failed" in human
    assert "recent runs:" in cli("schedule", key).stdout


def test_run_skips_records_still_enrolled(
    e2e_cli: Cli, schedules: Callable[[str], ScheduleHandle], write_definition: Write
) -> None:
    cli = e2e_cli
    key = unique_key("slow")
    schedules(key)  # deleted after the test
    add_deals(cli, {"a": 1500, "b": 2500, "c": 5})
    cli("publish", str(write_definition(weekly_deals(key, delay="1h"))))
    cli("activate", key)

    assert counts(cli.json("schedule", key, "--run-now")) == (2, 2, 0, 0)
    # a and b wait an hour: the second run skips them and counts them; d is new and enrolls.
    add_deals(cli, {"d": 1000})
    second = cli.json("schedule", key, "--run-now")
    assert counts(second) == (3, 1, 2, 0)
    assert enrolled_ids(cli, key) == ["a", "b", "d"]
    assert {e["status"] for e in cli.json("enrollments", key)} == {"running"}
    runs = cli("schedule", key).stdout
    assert "3 matched, 1 enrolled, 2 skipped, 0 failed" in runs

    # Nothing left waiting on the shared server.
    assert "3 enrollment(s) unenrolled" in cli("deactivate", key, "--unenroll-all").stdout


def test_publish_updates_deactivate_pauses_activate_resumes(
    e2e_cli: Cli,
    temporal_dev_env: DevEnv,
    schedules: Callable[[str], ScheduleHandle],
    write_definition: Write,
) -> None:
    cli = e2e_cli
    key = unique_key("changing")
    handle = schedules(key)
    add_deals(cli, {"big": 5000})
    cli("publish", str(write_definition(weekly_deals(key))))
    cli("activate", key)

    # A new version changes the Schedule at once: its very next run is the new one's.
    v2 = weekly_deals(key, days=[quiet_day(2), quiet_day(4)], at="06:45")
    assert cli("publish", str(write_definition(v2))).stdout.startswith(f"{key}: version 2")
    description = describe(temporal_dev_env, handle)
    assert calendars(description.schedule.spec) == calendars(
        schedule_spec(calendar_of(v2), timezone=TIMEZONE)
    )
    assert description.info.next_action_times[:4] == expected_runs(v2, 4)
    assert not description.schedule.state.paused
    assert cli.json("schedule", key, "--run-now")["version"] == 2

    # Deactivation pauses the Schedule; a run by hand is refused while inactive.
    cli("deactivate", key)
    assert describe(temporal_dev_env, handle).schedule.state.paused
    shown = cli.json("show", key)["schedule"]
    assert (shown["state"], shown["paused"], shown["next_runs"]) == ("paused", True, [])
    refused = cli("schedule", key, "--run-now", code=1)
    assert f"workflow '{key}' is not active" in refused.stderr
    assert "state      paused" in cli("show", key).stdout

    # Activation unpauses it.
    cli("activate", key)
    description = describe(temporal_dev_env, handle)
    assert not description.schedule.state.paused
    assert description.info.next_action_times[:1] == expected_runs(v2, 1)
    assert cli.json("show", key)["schedule"]["state"] == "active"


def test_manual_enrollment_starts_at_once_and_not_in_later_runs(
    e2e_cli: Cli, schedules: Callable[[str], ScheduleHandle], write_definition: Write
) -> None:
    cli = e2e_cli
    key = unique_key("manual")
    schedules(key)
    add_deals(cli, {"big": 5000, "small": 10})
    cli("publish", str(write_definition(weekly_deals(key, delay="1h"))))
    cli("activate", key)

    # `small` does not match; enrolled by hand it starts now, without waiting for a run.
    assert cli("enroll", key, "small").stdout.startswith("small: enrolled (")
    [manual] = cli.json("enrollments", key)
    assert (manual["record_id"], manual["source"], manual["status"]) == (
        "small",
        "manual",
        "running",
    )
    cli.wait_for_step(key, "small", "wait")

    # Runs still enroll by the criteria alone: `small` is neither matched nor skipped.
    assert counts(cli.json("schedule", key, "--run-now")) == (1, 1, 0, 0)
    assert enrolled_ids(cli, key) == ["big", "small"]
    assert counts(cli.json("schedule", key, "--run-now")) == (1, 0, 1, 0)  # big still waits
    cli("unenroll", key, "small")  # ended: still not part of a run
    assert counts(cli.json("schedule", key, "--run-now")) == (1, 0, 1, 0)
    assert enrolled_ids(cli, key) == ["big", "small"]
    cli("deactivate", key, "--unenroll-all")


def test_run_started_by_the_schedule(
    e2e_cli: Cli,
    temporal_dev_env: DevEnv,
    schedules: Callable[[str], ScheduleHandle],
    write_definition: Write,
    eventually: Any,
) -> None:
    cli = e2e_cli
    key = unique_key("triggered")
    handle = schedules(key)
    add_deals(cli, {"big": 5000, "edge": 1000, "small": 10})
    cli("publish", str(write_definition(weekly_deals(key))))
    cli("activate", key)

    temporal_dev_env.background.run(handle.trigger())

    def last_run() -> dict[str, Any] | None:
        run = cli.json("show", key)["schedule"]["last_run"]
        return run if run and run["status"] == "completed" else None

    run = eventually(last_run, what=f"the triggered run of {key}")
    assert (run["trigger"], run["version"], counts(run)) == ("schedule", 1, (2, 2, 0, 0))
    assert enrolled_ids(cli, key) == ["big", "edge"]
    [action] = describe(temporal_dev_env, handle).info.recent_actions
    assert action.action.workflow_id.startswith(f"crmflow-run:{key}-")

    # A paused Schedule can still be triggered by hand in Temporal: the run then sees the
    # workflow inactive and enrolls no one (and records no run).
    cli("deactivate", key)
    temporal_dev_env.background.run(handle.trigger())
    actions = eventually(
        lambda: describe(temporal_dev_env, handle).info.recent_actions[1:],
        what="the second triggered run to start",
    )
    client = temporal_dev_env.env.client
    result = temporal_dev_env.background.run(
        client.get_workflow_handle(actions[0].action.workflow_id).result()
    )
    assert result["note"] == "workflow not active: no run"
    assert len(cli.json("enrollments", key)) == 2
    assert cli.json("show", key)["schedule"]["last_run"] == run


def test_run_recovers_enrollments_whose_start_was_lost(
    e2e_cli: Cli,
    temporal_dev_env: DevEnv,
    schedules: Callable[[str], ScheduleHandle],
    write_definition: Write,
) -> None:
    """A run that died between committing a page's rows and starting their workflows leaves
    rows `running` with nothing behind them: the next run starts those, and still skips a
    record whose enrollment really runs."""
    from crmflow.definitions import WorkflowDefinition
    from crmflow.enrolling import EnrollmentStarter, Ready
    from crmflow.services import App, Settings

    cli = e2e_cli
    key = unique_key("lost")
    schedules(key)
    definition = weekly_deals(key, delay="1h")
    add_deals(cli, {"a": 1500, "b": 2500, "c": 3000})
    cli("publish", str(write_definition(definition)))
    cli("activate", key)
    assert cli("enroll", key, "c").stdout.startswith("c: enrolled (")

    # The store half of a page, without its starts: what a crash between the two leaves.
    app = App(Settings(db_url=cli.db_url, task_queue=cli.task_queue))
    try:
        starter = EnrollmentStarter(app.sessions, temporal_dev_env.env.client, cli.task_queue)
        prepared = starter.prepare_page(
            WorkflowDefinition.model_validate(definition), 1, ["a", "b", "c"], source="schedule"
        )
    finally:
        app.close()
    assert [type(p) for p in prepared] == [Ready, Ready, Ready]
    assert [p.recover for p in prepared if isinstance(p, Ready)] == [False, False, True]
    assert enrolled_ids(cli, key) == ["a", "b", "c"]

    run = cli.json("schedule", key, "--run-now")
    assert counts(run) == (3, 2, 1, 0)  # a and b started now; c runs already
    for record_id in ("a", "b", "c"):
        cli.wait_for_step(key, record_id, "wait")
    assert enrolled_ids(cli, key) == ["a", "b", "c"]
    # And a later run skips all three: they run now.
    assert counts(cli.json("schedule", key, "--run-now")) == (3, 0, 3, 0)
    cli("deactivate", key, "--unenroll-all")


def test_remove_deletes_the_schedule_and_the_workflow(
    e2e_cli: Cli,
    temporal_dev_env: DevEnv,
    schedules: Callable[[str], ScheduleHandle],
    write_definition: Write,
) -> None:
    cli = e2e_cli
    key = unique_key("removed")
    handle = schedules(key)
    add_deals(cli, {"big": 5000})
    cli("publish", str(write_definition(weekly_deals(key, delay="1h"))))
    cli("activate", key)
    assert counts(cli.json("schedule", key, "--run-now")) == (1, 1, 0, 0)
    cli.wait_for_step(key, "big", "wait")

    refused = cli("remove", key, code=2)
    assert refused.stderr.strip().endswith(f"run `crmflow deactivate {key}` first")
    cli("deactivate", key)  # the enrollment is paused, not ended
    refused = cli("remove", key, code=2)
    assert f"run `crmflow deactivate {key} --unenroll-all` first" in refused.stderr
    describe(temporal_dev_env, handle)  # still there: nothing was changed

    cli("deactivate", key, "--unenroll-all")
    cli.wait_for_status(key, "big", "unenrolled")
    assert cli("remove", key).stdout == f"{key} removed, with 1 ended enrollment(s)\n"
    with pytest.raises(RPCError, match="not found"):
        describe(temporal_dev_env, handle)
    assert key not in {w["key"] for w in cli.json("workflows")}
    assert f"no workflow '{key}'" in cli("show", key, code=2).stderr
    assert f"no workflow '{key}'" in cli("remove", key, code=2).stderr
    # The record stays, and so does what the workflow did to it; the key can be published anew.
    assert cli.json("records", "show", "big", "--object", "deal")["id"] == "big"
    assert cli("publish", str(write_definition(weekly_deals(key)))).stdout.startswith(
        f"{key}: version 1"
    )

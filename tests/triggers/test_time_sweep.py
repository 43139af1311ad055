"""Time as a trigger, with the real stack and a controlled clock: the time sweep (`TimeSweeper`,
the activity the deployment's Schedule runs) appends "time passed" changes to the change feed,
and the dispatcher acts on them as if the record had changed at that instant; real enrollments
on the time-skipping server, SQLite and PostgreSQL stores. The clock is a value the test moves:
no assertion depends on how long anything takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from temporalio.testing import WorkflowEnvironment
from test_automatic_enrollment import Crash, lease_runs_out

from crmflow import services
from crmflow.activities.models import EnrollmentResult
from crmflow.activities.time_sweep import TimeSweeper
from crmflow.rules import Change
from crmflow.services import App
from crmflow.store import (
    Enrollment,
    EventRepository,
    RecordChange,
    TimeSweep,
    TimeSweepRepository,
)
from crmflow.triggers import Dispatcher

DAY = timedelta(days=1)
REENGAGE = {"property": "last_activity", "op": "more_than_ago", "value": "30d"}


class Clock:
    """The time the sweep and the dispatcher see; the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self, session: Session | None = None) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def workflow(key: str = "reengage", **overrides: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "key": key,
        "name": key.title(),
        "enrollment": {"trigger": "criteria", "criteria": REENGAGE},
        "actions": [
            {"id": "hello", "type": "send_email", "subject": "We miss you", "body": "."},
            {"id": "wait", "type": "delay", "duration": "10d"},
            {"id": "call", "type": "create_task", "title": "Call"},
        ],
    }
    definition.update(overrides)
    return definition


@pytest.fixture
def clock(app: App) -> Clock:
    # Just after the activation the test makes: the sweep starts at the workflow's activation.
    return Clock(datetime.now(UTC) + timedelta(seconds=5))


@pytest.fixture
def sweeper(app: App, clock: Clock) -> TimeSweeper:
    return TimeSweeper(app.sessions, clock=clock)


@pytest.fixture
def dispatcher(app: App, env: WorkflowEnvironment, clock: Clock) -> Dispatcher:
    return Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue, clock=clock)


def statuses(app: App, key: str = "reengage") -> list[tuple[str, str, str | None]]:
    return [(e["record_id"], e["status"], e["reason"]) for e in services.list_enrollments(app, key)]


def time_changes(app: App) -> list[tuple[str | None, str, datetime]]:
    with app.sessions() as session:
        return [
            (c.workflow_key, c.record_id, c.occurred_at)
            for c in session.scalars(
                select(RecordChange).where(RecordChange.kind == "time").order_by(RecordChange.id)
            )
        ]


def enrolled_by_time(app: App) -> list[str]:
    """The records whose enrollment a "time passed" change made."""
    with app.sessions() as session:
        return sorted(
            session.scalars(
                select(Enrollment.record_id)
                .join(RecordChange, RecordChange.id == Enrollment.trigger_change_id)
                .where(RecordChange.kind == "time")
            )
        )


def track(app: App, record_id: str, name: str, at: datetime) -> None:
    with app.sessions.begin() as session:
        EventRepository(session).add("contact", record_id, name, {}, occurred_at=at)


def swept_to(app: App, key: str = "reengage") -> datetime | None:
    with app.sessions() as session:
        return TimeSweepRepository(session).swept_to(key)


def set_watermark(app: App, at: datetime, key: str = "reengage") -> None:
    with app.sessions.begin() as session:
        session.execute(update(TimeSweep).where(TimeSweep.workflow_key == key).values(swept_to=at))


async def result_of(env: WorkflowEnvironment, app: App, record_id: str, key: str = "reengage"):
    [enrollment] = services.list_enrollments(app, key, record_id=record_id)
    handle = env.client.get_workflow_handle(
        enrollment["temporal_workflow_id"], result_type=EnrollmentResult
    )
    async with env.time_skipping_unlocked():
        return await handle.result()


async def test_a_record_aging_past_30_days_enrolls_once(
    app, env, new_worker, publish, sweeper, dispatcher, clock
):
    await publish(workflow(goal={"criteria": {"event": "purchased", "within": "30d"}}))
    start = clock.now
    # ann turns 30 days inactive a minute from now; bob too, but he purchased 10 days ago (the
    # goal, judged at that instant, keeps him out); cid purchased 40 days ago (no longer counts).
    for record_id in ("ann", "bob", "cid"):
        services.set_record(
            app,
            "contact",
            record_id,
            {
                "email": f"{record_id}@example.com",
                "last_activity": iso(start - 30 * DAY + timedelta(minutes=1)),
            },
        )
    track(app, "bob", "purchased", start - 10 * DAY)
    track(app, "cid", "purchased", start - 40 * DAY)
    async with new_worker():
        sweeper.sweep()
        await dispatcher.dispatch_pending()
        assert statuses(app) == []  # nothing crossed yet
        clock.advance(timedelta(seconds=30))
        assert sweeper.sweep().changes == 0
        clock.advance(timedelta(seconds=40))  # past start + 1 min + 1 s
        first = sweeper.sweep()
        assert (first.candidates, first.changes) == (3, 3)
        await dispatcher.dispatch_pending()
        assert sorted(statuses(app)) == [
            ("ann", "running", None),
            ("cid", "running", None),
        ]
        crossing = datetime.fromisoformat(iso(start - 30 * DAY + timedelta(minutes=1))) + 30 * DAY
        assert {at for _, _, at in time_changes(app)} == {crossing + timedelta(seconds=1)}
        # Two more sweeps: nothing more. Then the same window again (the watermark put back, as
        # a sweep that crashed before committing would leave it): still nothing twice.
        clock.advance(timedelta(seconds=30))
        assert sweeper.sweep().changes == 0
        assert sweeper.sweep().changes == 0
        set_watermark(app, start)
        again = sweeper.sweep()
        assert (again.candidates, again.changes) == (3, 0)
        await dispatcher.dispatch_pending()
        assert len(time_changes(app)) == 3
        assert sorted(statuses(app)) == [("ann", "running", None), ("cid", "running", None)]
        assert enrolled_by_time(app) == ["ann", "cid"]
        result = await result_of(env, app, "ann")
        assert result.status == "completed"
    assert len([m for m in services.outbox(app) if m["record_id"] == "ann"]) == 1


async def test_a_goal_that_time_meets_ends_the_delay(
    app, env, new_worker, publish, sweeper, dispatcher, clock
):
    # Goal: the demo (on demo_date) happened within the last 7 days: met when demo_date comes.
    goal = {"criteria": {"property": "demo_date", "op": "within_last", "value": "7d"}}
    await publish(workflow("demo", enrollment={"trigger": "manual"}, goal=goal))
    demo = clock.now + timedelta(hours=2)
    services.set_record(app, "contact", "ann", {"email": "ann@example.com", "demo_date": iso(demo)})
    async with new_worker():
        [outcome] = await services.enroll(app, "demo", ["ann"])
        assert outcome.ok
        clock.advance(timedelta(hours=1))
        sweeper.sweep()
        await dispatcher.dispatch_pending()
        assert statuses(app, "demo") == [("ann", "running", None)]
        clock.advance(timedelta(hours=1, seconds=30))
        assert sweeper.sweep().changes == 1
        await dispatcher.dispatch_pending()
        result = await result_of(env, app, "ann", "demo")
    assert result.status == "goal_met"
    assert statuses(app, "demo") == [("ann", "goal_met", "goal met")]
    assert services.tasks(app) == []  # the 10-day delay was cut short: no task


async def test_unenroll_when_turning_true_by_time_ends_a_delay(
    app, env, new_worker, publish, sweeper, dispatcher, clock
):
    # "Has not opened an email in 90 days" turns true as the last opening ages out.
    silent = {"not": {"event": "email_opened", "within": "90d"}}
    await publish(
        workflow("nurture", enrollment={"trigger": "manual"}, settings={"unenroll_when": silent})
    )
    services.set_record(app, "contact", "ann", {"email": "ann@example.com"})
    opened = clock.now - 90 * DAY + timedelta(minutes=5)
    track(app, "ann", "email_opened", opened)
    async with new_worker():
        [outcome] = await services.enroll(app, "nurture", ["ann"])
        assert outcome.ok
        await dispatcher.dispatch_pending()
        clock.advance(timedelta(minutes=4))
        assert sweeper.sweep().changes == 0
        clock.advance(timedelta(minutes=2))
        assert sweeper.sweep().changes == 1
        await dispatcher.dispatch_pending()
        result = await result_of(env, app, "ann", "nurture")
    assert result.status == "unenrolled"
    assert statuses(app, "nurture") == [("ann", "unenrolled", "unenroll_when matched")]
    [(key, _, at)] = time_changes(app)
    assert key == "nurture" and at == opened + 90 * DAY + timedelta(microseconds=1)


async def test_a_sweep_that_missed_runs_catches_up_without_doubles(
    app, env, new_worker, publish, dispatcher, clock
):
    await publish(workflow())
    start = clock.now
    crossings = {"ann": timedelta(hours=1), "bob": timedelta(hours=5), "cid": timedelta(days=2)}
    for record_id, after in crossings.items():
        last = start - 30 * DAY + after
        services.set_record(app, "contact", record_id, {"last_activity": iso(last)})
    await dispatcher.dispatch_pending()  # their creation: not matching yet
    # Three days without a sweep (server down). The first run has a budget of one record: it
    # stops after ann's window, and the next runs go on from there, an hour at a time.
    small = TimeSweeper(app.sessions, clock=clock, budget=1)
    clock.advance(3 * DAY)
    runs = []
    while not runs or not runs[-1].caught_up:
        runs.append(small.sweep())
        assert len(runs) < 10
    assert [r.changes for r in runs] == [1, 1, 1, 0]
    assert swept_to(app) == clock.now
    assert TimeSweeper(app.sessions, clock=clock).sweep().changes == 0
    async with new_worker():
        await dispatcher.dispatch_pending()
        assert sorted(statuses(app)) == [(r, "running", None) for r in ("ann", "bob", "cid")]
        assert enrolled_by_time(app) == ["ann", "bob", "cid"]
        # The whole gap again (watermark put back): nothing twice.
        set_watermark(app, start)
        assert TimeSweeper(app.sessions, clock=clock).sweep().changes == 0
        await dispatcher.dispatch_pending()
        assert len(statuses(app)) == 3


async def test_crossings_on_a_dst_day_happen_at_their_exact_instant(
    app, env, new_worker, publish, dispatcher, clock
):
    # 2027-03-14 is spring-forward day in New York: one day after 02:30 EST on the 13th is 03:30
    # EDT on the 14th (elapsed time), and a date-only renewal is at midnight UTC.
    soon = {"property": "renewal_date", "op": "before", "value": "30d"}
    await publish(
        workflow(
            enrollment={
                "trigger": "criteria",
                "criteria": {
                    "any": [
                        {"property": "last_activity", "op": "more_than_ago", "value": "1d"},
                        soon,
                    ]
                },
            },
            settings={"timezone": "America/New_York"},
        )
    )
    services.set_record(app, "contact", "ann", {"last_activity": "2027-03-13T02:30:00-05:00"})
    services.set_record(app, "contact", "bob", {"renewal_date": "2027-04-13"})
    await dispatcher.dispatch_pending()  # their creation: not matching yet
    set_watermark(app, datetime(2027, 3, 13, 12, tzinfo=UTC))
    clock.now = datetime(2027, 3, 15, tzinfo=UTC)
    assert TimeSweeper(app.sessions, clock=clock).sweep().changes == 2
    assert sorted(time_changes(app), key=lambda c: c[1]) == [
        ("reengage", "ann", datetime(2027, 3, 14, 7, 30, 1, tzinfo=UTC)),  # 03:30:01 EDT
        ("reengage", "bob", datetime(2027, 3, 14, 0, 0, 1, tzinfo=UTC)),
    ]
    async with new_worker():
        await dispatcher.dispatch_pending()
        assert sorted(statuses(app)) == [("ann", "running", None), ("bob", "running", None)]
        assert enrolled_by_time(app) == ["ann", "bob"]


async def test_a_reenroll_property_reenrolls_when_time_makes_it_match_again(
    app, env, new_worker, publish, sweeper, dispatcher, clock
):
    quiet = {"property": "last_activity", "op": "more_than_ago", "value": "2h"}
    await publish(
        workflow(
            enrollment={
                "trigger": "criteria",
                "criteria": quiet,
                "reenroll": {"properties": ["last_activity"]},
            },
            actions=[{"id": "hello", "type": "send_email", "subject": "Hi", "body": "."}],
        )
    )
    last = clock.now - timedelta(hours=2) + timedelta(seconds=30)
    services.set_record(app, "contact", "ann", {"email": "a@x.io", "last_activity": iso(last)})
    async with new_worker():
        await dispatcher.dispatch_pending()
        clock.advance(timedelta(minutes=1))
        assert sweeper.sweep().changes == 1
        await dispatcher.dispatch_pending()
        assert (await result_of(env, app, "ann")).status == "completed"
        # Active again (no longer matching: no re-enrollment), then 2 hours of silence again.
        services.set_record(app, "contact", "ann", {"last_activity": iso(clock.now)})
        await dispatcher.dispatch_pending()
        assert len(statuses(app)) == 1
        clock.advance(timedelta(hours=2, minutes=1))
        assert sweeper.sweep().changes == 1
        await dispatcher.dispatch_pending()
        assert [s for _, s, _ in statuses(app)][:1] == ["completed"]
        assert len(statuses(app)) == 2
        [_, again] = services.list_enrollments(app, "reengage", record_id="ann")
    assert again["reason"] is None or "re-enrolled" in str(again)


EXAMPLE = Path(__file__).parents[2] / "examples" / "renewal-reminders.yaml"


async def test_renewal_reminders_enrolls_30_days_before_and_follows_a_moved_date(
    app, env, new_worker, sweeper, dispatcher, clock
):
    services.publish_files(app, [EXAMPLE])
    await services.activate(app, "renewal-reminders")
    renewal = (clock.now + 30 * DAY + timedelta(minutes=1)).replace(microsecond=0)
    company = {"name": "Acme", "lifecycle_stage": "customer", "owner": "bob", "email": "a@acme.io"}
    services.set_record(app, "company", "acme", {**company, "renewal_date": iso(renewal)})

    def states() -> list[tuple[str, str | None]]:
        return [(s, r) for _, s, r in statuses(app, "renewal-reminders")]

    async with new_worker():
        await dispatcher.dispatch_pending()
        assert states() == []  # 30 days and a minute away: not yet
        clock.advance(timedelta(minutes=2))
        assert sweeper.sweep().changes == 1
        await dispatcher.dispatch_pending()
        assert states() == [("running", None)]
        # The renewal is moved two months on while enrolled: the criteria no longer match,
        # the reminders stop; 30 days before the new date, time enrolls the company again.
        later = renewal + 60 * DAY
        services.set_record(app, "company", "acme", {"renewal_date": iso(later)})
        await dispatcher.dispatch_pending()
        assert (await result_of_key(env, app, "renewal-reminders")).status == "unenrolled"
        assert states() == [("unenrolled", "enrollment criteria no longer met")]
        clock.now = later - 30 * DAY - timedelta(minutes=1)
        set_watermark(app, clock.now, "renewal-reminders")
        clock.advance(timedelta(minutes=2))
        assert sweeper.sweep().changes == 1
        await dispatcher.dispatch_pending()
        assert states() == [
            ("unenrolled", "enrollment criteria no longer met"),
            ("running", None),
        ]
        # Renewed: the goal ends the enrollment during its wait.
        services.set_record(app, "company", "acme", {"renewal_status": "renewed"})
        await dispatcher.dispatch_pending()
        result = await result_of_key(env, app, "renewal-reminders")
    assert result.status == "goal_met"


async def result_of_key(env: WorkflowEnvironment, app: App, key: str):
    enrollment = services.list_enrollments(app, key)[-1]
    handle = env.client.get_workflow_handle(
        enrollment["temporal_workflow_id"], result_type=EnrollmentResult
    )
    async with env.time_skipping_unlocked():
        return await handle.result()


@pytest.mark.parametrize("point", ["decided", "enrolled"])
async def test_a_dispatcher_killed_on_a_time_change_enrolls_once(
    app, env, new_worker, publish, sweeper, dispatcher, clock, point
):
    await publish(workflow())
    last = clock.now - 30 * DAY + timedelta(seconds=30)
    services.set_record(app, "contact", "ann", {"email": "a@x.io", "last_activity": iso(last)})

    def crash(at: str, change: Change) -> None:
        if at == point and change.kind == "time":
            raise Crash(at)

    dispatcher.crash_point = crash
    async with new_worker():
        await dispatcher.dispatch_pending()  # its creation: not matching yet
        assert statuses(app) == []
        clock.advance(timedelta(minutes=1))
        assert sweeper.sweep().changes == 1
        with pytest.raises(Crash):
            await dispatcher.dispatch_pending()
        lease_runs_out(app)
        fresh = Dispatcher(
            app.sessions, env.client, task_queue=app.settings.task_queue, clock=clock
        )
        await fresh.dispatch_pending()
        assert sweeper.sweep().changes == 0
        await fresh.dispatch_pending()
        assert statuses(app) == [("ann", "running", None)]
        assert (await result_of(env, app, "ann")).status == "completed"
    assert len(services.outbox(app)) == 1

"""Automatic enrollment end to end: the store's change feed, the dispatcher, real enrollments on
the time-skipping server. The dispatcher is driven one batch at a time (`dispatch_pending`), so
each test says exactly which changes were dispatched when."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from crmflow import services
from crmflow.activities.models import EnrollmentResult
from crmflow.rules import Change
from crmflow.services import App
from crmflow.store import ChangeRepository, Lease, RecordChange, RecordRepository
from crmflow.triggers import Dispatcher

LEAD = {"property": "lifecycle_stage", "op": "eq", "value": "lead"}


def nurture(**overrides: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "key": "nurture",
        "name": "Nurture",
        "enrollment": {"trigger": "criteria", "criteria": LEAD},
        "actions": [
            {
                "id": "hello",
                "type": "send_email",
                "subject": "Hi {{ record.firstname }}",
                "body": ".",
            },
            {"id": "wait", "type": "delay", "duration": "2d"},
            {"id": "call", "type": "create_task", "title": "Call {{ record.firstname }}"},
        ],
    }
    for name, value in overrides.items():
        if name in ("enrollment", "settings", "goal"):
            definition[name] = {**definition.get(name, {}), **value}
        else:
            definition[name] = value
    return definition


@pytest.fixture
def dispatcher(app: App, env: WorkflowEnvironment) -> Dispatcher:
    return Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue)


def statuses(app: App, key: str = "nurture") -> list[tuple[str, str, str | None]]:
    return [(e["record_id"], e["status"], e["reason"]) for e in services.list_enrollments(app, key)]


def pending(app: App) -> int:
    with app.sessions() as session:
        return ChangeRepository(session).count_pending()


async def settle(env: WorkflowEnvironment, app: App, key: str = "nurture") -> None:
    """Let every running enrollment of `key` finish (time skips over delays)."""
    for enrollment in services.list_enrollments(app, key):
        if enrollment["status"] in ("running", "paused"):
            handle = env.client.get_workflow_handle(
                enrollment["temporal_workflow_id"], result_type=EnrollmentResult
            )
            async with env.time_skipping_unlocked():
                await handle.result()


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := predicate()):
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
    return value


async def until_waiting(
    app: App, record_id: str, key: str = "nurture", *, step: str = "wait"
) -> None:
    def waiting() -> bool:
        found = services.list_enrollments(app, key, record_id=record_id)
        return bool(found) and any(s["action_id"] == step for s in found[-1]["steps"])

    await wait_for(waiting)


async def test_a_record_that_comes_to_match_enrolls_once(app, env, new_worker, publish, dispatcher):
    await publish(nurture())
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker():
        await dispatcher.dispatch_pending()
        assert statuses(app) == []
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead"})
        await dispatcher.dispatch_pending()
        assert statuses(app) == [("ann", "running", None)]
        await settle(env, app)
        # Matching again later does not re-enroll: without `reenroll`, at most once, ever.
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "customer"})
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "score": 3})
        await dispatcher.dispatch_pending()
    assert statuses(app) == [("ann", "completed", None)]
    assert pending(app) == 0
    [mail] = services.outbox(app)
    assert mail["subject"] == "Hi Ann"


async def test_a_new_record_that_matches_enrolls(app, env, new_worker, publish, dispatcher):
    await publish(nurture())
    async with new_worker():
        services.set_record(app, "contact", "bob", {"lifecycle_stage": "lead", "email": "b@x.io"})
        await dispatcher.dispatch_pending()
        assert statuses(app) == [("bob", "running", None)]


async def test_records_matching_before_activation_wait_for_a_change_that_makes_them_match(
    app, env, new_worker, publish, dispatcher
):
    services.set_record(app, "contact", "old", {"lifecycle_stage": "lead", "email": "o@x.io"})
    await publish(nurture())
    async with new_worker():
        await dispatcher.dispatch_pending()  # the change from before activation: ignored
        services.set_record(app, "contact", "old", {"firstname": "Olga"})  # unrelated
        await dispatcher.dispatch_pending()
        assert statuses(app) == []
        services.set_record(app, "contact", "old", {"lifecycle_stage": "customer"})
        services.set_record(app, "contact", "old", {"lifecycle_stage": "lead"})
        await dispatcher.dispatch_pending()
        assert statuses(app) == [("old", "running", None)]


@pytest.mark.parametrize(
    ("reenroll", "retrigger"),
    [
        ({"properties": ["lifecycle_stage"]}, "property"),
        ({"events": ["form_submitted"]}, "event"),
        ({"lists": ["webinar"]}, "list"),
    ],
)
async def test_a_reenroll_trigger_enrolls_again_once_the_first_enrollment_ended(
    app, env, new_worker, publish, dispatcher, reenroll, retrigger
):
    await publish(nurture(enrollment={"reenroll": reenroll}))
    async with new_worker():
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
        await dispatcher.dispatch_pending()
        # While enrolled, a trigger does not enroll a second time.
        fire = {
            "property": lambda: (
                services.set_record(app, "contact", "ann", {"lifecycle_stage": "mql"}),
                services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead"}),
            ),
            "event": lambda: services.track_event(app, "contact", "ann", "form_submitted", {}),
            "list": lambda: (
                services.change_list(app, "webinar", ["ann"], object_type="contact", add=False),
                services.change_list(app, "webinar", ["ann"], object_type="contact", add=True),
            ),
        }[retrigger]
        fire()
        await dispatcher.dispatch_pending()
        assert [s for _, s, _ in statuses(app)] == ["running"]
        await settle(env, app)
        fire()
        await dispatcher.dispatch_pending()
        assert [s for _, s, _ in statuses(app)] == ["completed", "running"]
        # A trigger while the criteria do not match enrolls nobody.
        await settle(env, app)
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "customer"})
        if retrigger != "property":
            fire()
        await dispatcher.dispatch_pending()
    assert [s for _, s, _ in statuses(app)] == ["completed", "completed"]


async def test_goal_met_before_enrolling_keeps_the_record_out(
    app, env, new_worker, publish, dispatcher
):
    goal = {"criteria": {"property": "lifecycle_stage", "op": "eq", "value": "customer"}}
    criteria = {"property": "score", "op": "gte", "value": 10}
    await publish(nurture(enrollment={"criteria": criteria}, goal=goal))
    async with new_worker():
        services.set_record(app, "contact", "won", {"lifecycle_stage": "customer", "score": 50})
        services.set_record(app, "contact", "new", {"lifecycle_stage": "lead", "score": 50})
        await dispatcher.dispatch_pending()
        assert statuses(app) == [("new", "running", None)]
        # The goal met during the delay ends the enrollment at once.
        await until_waiting(app, "new")
        services.set_record(app, "contact", "new", {"lifecycle_stage": "customer"})
        await dispatcher.dispatch_pending()
        await settle(env, app)
    assert statuses(app) == [("new", "goal_met", "goal met")]
    steps = services.list_enrollments(app, "nurture")[0]["steps"]
    assert steps[-1]["action_id"] == "wait" and steps[-1]["outcome"] == "interrupted: goal_met"


async def test_unenroll_when_and_criteria_unmet(app, env, new_worker, publish, dispatcher):
    unsubscribed = {"property": "unsubscribed", "op": "eq", "value": True}
    await publish(nurture(settings={"unenroll_when": unsubscribed}))
    second = nurture(key="strict", settings={"unenroll_when_criteria_unmet": True})
    await publish(second)
    async with new_worker():
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
        await dispatcher.dispatch_pending()
        await until_waiting(app, "ann")
        await until_waiting(app, "ann", key="strict")
        services.set_record(app, "contact", "ann", {"unsubscribed": True})
        await dispatcher.dispatch_pending()
        # Signals act at once, in the middle of the delay: no time needs to pass.
        await wait_for(lambda: statuses(app)[0][1] == "unenrolled")
        assert statuses(app) == [("ann", "unenrolled", "unenroll_when matched")]
        assert statuses(app, "strict") == [("ann", "running", None)]
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "customer"})
        await dispatcher.dispatch_pending()
        await wait_for(lambda: statuses(app, "strict")[0][1] == "unenrolled")
    assert statuses(app, "strict") == [("ann", "unenrolled", "enrollment criteria no longer met")]


async def test_suppression_lists_block_enrollment_and_unenroll_on_joining(
    app, env, new_worker, publish, dispatcher
):
    definition = nurture(settings={"suppression_lists": ["do-not-contact"]})
    definition["enrollment"] = {"trigger": "criteria", "criteria": LEAD}
    await publish(definition)
    services.set_record(app, "contact", "sue", {"email": "s@x.io"})
    services.change_list(app, "do-not-contact", ["sue"], object_type="contact", add=True)
    async with new_worker():
        services.set_record(app, "contact", "sue", {"lifecycle_stage": "lead"})
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
        await dispatcher.dispatch_pending()
        assert statuses(app) == [("ann", "running", None)]
        # Manual enrollment refuses a suppressed record too.
        [refused] = await services.enroll(app, "nurture", ["sue"])
        assert not refused.ok and "suppressed" in refused.message
        await until_waiting(app, "ann")
        services.change_list(app, "do-not-contact", ["ann"], object_type="contact", add=True)
        await dispatcher.dispatch_pending()
        await settle(env, app)
    assert statuses(app) == [("ann", "unenrolled", "joined suppression list do-not-contact")]


async def test_deleting_a_record_unenrolls_it_everywhere(app, env, new_worker, publish, dispatcher):
    await publish(nurture())
    manual = nurture(key="manual", enrollment={"trigger": "manual"})
    del manual["enrollment"]["criteria"]
    await publish(manual)
    async with new_worker():
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
        await dispatcher.dispatch_pending()
        await services.enroll(app, "manual", ["ann"])
        await until_waiting(app, "ann")
        await until_waiting(app, "ann", key="manual")
        services.delete_record(app, "contact", "ann")
        await dispatcher.dispatch_pending()
        await settle(env, app)
        await settle(env, app, "manual")
    assert statuses(app) == [("ann", "unenrolled", "record deleted")]
    assert statuses(app, "manual") == [("ann", "unenrolled", "record deleted")]


async def test_unenroll_from_other_workflows_on_enrolling(
    app, env, new_worker, publish, dispatcher
):
    await publish(
        nurture(key="cold", enrollment={"criteria": {"property": "score", "op": "lt", "value": 10}})
    )
    await publish(nurture(key="hot", settings={"unenroll_from": ["cold"]}))
    async with new_worker():
        services.set_record(app, "contact", "ann", {"score": 1, "email": "a@x.io"})
        await dispatcher.dispatch_pending()
        await until_waiting(app, "ann", key="cold")
        services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead"})
        await dispatcher.dispatch_pending()
        await settle(env, app, "cold")
        assert statuses(app, "cold") == [("ann", "unenrolled", "enrolled in 'hot'")]
        assert statuses(app, "hot") == [("ann", "running", None)]


async def test_a_change_made_by_a_workflow_action_triggers_another_workflow(
    app, env, new_worker, publish, dispatcher
):
    qualify = {
        "key": "qualify",
        "name": "Qualify",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {"id": "mark", "type": "set_property", "property": "lifecycle_stage", "value": "lead"}
        ],
    }
    await publish(qualify)
    await publish(nurture())
    services.set_record(app, "contact", "ann", {"email": "a@x.io"})
    async with new_worker():
        await services.enroll(app, "qualify", ["ann"])
        await settle(env, app, "qualify")
        await dispatcher.dispatch_pending()
        assert statuses(app) == [("ann", "running", None)]


class Crash(BaseException):
    """The process dies: nothing after it runs (not an error the dispatcher could handle)."""


def lease_runs_out(app: App) -> None:
    """The dead dispatcher's lease expires, as it would after its TTL."""
    with app.sessions.begin() as session:
        session.execute(update(Lease).values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))


@pytest.mark.parametrize("point", ["decided", "before_start", "enrolled"])
async def test_a_dispatcher_killed_between_commit_and_dispatch_loses_and_doubles_nothing(
    app, env, new_worker, publish, dispatcher, point
):
    """The change is committed; the dispatcher dies (before acting, after creating the
    enrollment row but before starting its workflow, or after starting it but before marking
    the change); a new dispatcher picks the change up again: exactly one enrollment runs."""
    await publish(nurture())
    services.set_record(app, "contact", "ann", {"lifecycle_stage": "lead", "email": "a@x.io"})
    services.set_record(app, "contact", "bob", {"lifecycle_stage": "lead", "email": "b@x.io"})

    def crash(at: str, change: Change) -> None:
        if at == point and change.record_id == "ann":
            raise Crash(at)

    dispatcher.crash_point = crash
    if point == "before_start":
        real_start = env.client.start_workflow
        calls = {"n": 0}

        async def start_then_die(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise Crash("the process died after the enrollment row was committed")
            return await real_start(*args, **kwargs)

        dispatcher.starter.client = type(
            "C",
            (),
            {
                "start_workflow": staticmethod(start_then_die),
                "get_workflow_handle": env.client.get_workflow_handle,
            },
        )()
    async with new_worker():
        with pytest.raises(Crash):
            await dispatcher.dispatch_pending()
        assert pending(app) == 2  # nothing marked: both changes will be dispatched again
        lease_runs_out(app)
        fresh = Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue)
        await fresh.dispatch_pending()
        await fresh.dispatch_pending()
        assert pending(app) == 0
        await settle(env, app)
    assert sorted(statuses(app)) == [("ann", "completed", None), ("bob", "completed", None)]
    assert len(services.outbox(app)) == 2


async def test_the_running_loop_overlaps_batches_and_keeps_each_records_changes_in_order(
    app, env, new_worker, publish
):
    """`run` reads, decides and writes the next batch while the current one's starts finish;
    a record's later changes still wait for the batch that holds its earlier ones. Batches of
    4 over 8 records with 3 changes each, written round by round (so a record's changes are in
    different batches), each change enrolling the record in its own workflow, with slow starts
    (so the batches do overlap)."""
    keys = ["a", "b", "c"]
    for key in keys:
        criteria = {"property": key, "op": "eq", "value": 1}
        await publish(nurture(key=key, enrollment={"criteria": criteria}))
    records = [f"r{n}" for n in range(8)]
    for key in keys:
        for record_id in records:
            services.set_record(app, "contact", record_id, {"email": "a@x.io", key: 1})
    dispatcher = Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue, batch=4)
    decided: dict[str, list[int]] = {}
    dispatcher.crash_point = lambda at, change: (
        decided.setdefault(change.record_id, []).append(change.id) if at == "decided" else None
    )
    launch = dispatcher.starter.launch

    async def slow_launch(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)
        return await launch(*args, **kwargs)

    dispatcher.starter.launch = slow_launch  # type: ignore[method-assign]
    dispatch = dispatcher._dispatch
    in_flight, most = 0, 0

    async def counted(*args: Any) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await dispatch(*args)
        finally:
            in_flight -= 1

    dispatcher._dispatch = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    async with new_worker():
        running = asyncio.ensure_future(dispatcher.run(stop))
        await wait_for(lambda: pending(app) == 0)
        stop.set()
        await running
    assert most == 2  # batches did overlap
    assert sorted(decided) == records
    for record_id, ids in decided.items():
        assert ids == sorted(ids) and len(ids) == len(keys), (record_id, ids)
    for key in keys:
        assert sorted(statuses(app, key)) == [(r, "running", None) for r in records]


async def test_a_bulk_lane_whose_batch_holds_every_due_change_still_takes_a_later_import(
    app, env, publish
):
    """An import's last batch in flight holds every due change of the bulk lane: the lane
    looks again less and less often (BUSY_POLL doubling to BULK_BUSY_POLL), yet a second
    import written meanwhile is dispatched while that batch is still in flight."""
    await publish(nurture())

    def import_leads(ids: list[str]) -> None:
        with app.sessions.begin() as session:
            RecordRepository(session).upsert_many(
                "contact",
                [(i, {"email": f"{i}@x.io", "lifecycle_stage": "lead"}) for i in ids],
                now=datetime.now(UTC),
                bulk=True,
            )

    def dispatched(ids: list[str]) -> list[bool]:
        with app.sessions() as session:
            rows = session.scalars(select(RecordChange).where(RecordChange.record_id.in_(ids)))
            return [row.dispatched_at is not None for row in rows]

    first, second = [f"first{n}" for n in range(4)], ["second0", "second1"]
    import_leads(first)
    dispatcher = Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue, batch=4)
    launch = dispatcher.starter.launch
    release, blocked = asyncio.Event(), []

    async def held_launch(ready: Any, **kwargs: Any) -> Any:
        if ready.input.context.record_id in first:
            blocked.append(ready.input.context.record_id)
            await release.wait()
        return await launch(ready, **kwargs)

    dispatcher.starter.launch = held_launch  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.ensure_future(dispatcher.run(stop))
    try:
        await wait_for(lambda: len(blocked) == len(first))
        await asyncio.sleep(2.0)  # the lane's looks are 0.5, 1 and 2 s apart by now
        import_leads(second)
        await wait_for(lambda: all(dispatched(second)), timeout=10.0)
        assert not any(dispatched(first))  # the first batch is still in flight
        release.set()
        await wait_for(lambda: pending(app) == 0)
    finally:
        release.set()
        stop.set()
        await running
    assert sorted(statuses(app)) == [(r, "running", None) for r in sorted(first + second)]

"""Waits on the shared time-skipping server, on SQLite and PostgreSQL: events reach a running
wait_for_event through the change feed and the dispatcher; goals and unenrollment end every
kind of wait; histories with the new steps replay."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from test_enrollment_workflow import enroll_one, result_of, until_waiting

from crmflow import services
from crmflow.activities.models import ScheduledRunInput, UnenrollSignal
from crmflow.services import App
from crmflow.store import WorkflowRepository
from crmflow.triggers import Dispatcher
from crmflow.worker import EnrollmentWorkflow, sandboxed_workflow_runner
from crmflow.worker._scheduled import ScheduledRunWorkflow

WAITING = {
    "key": "opened",
    "name": "Opened",
    "enrollment": {"trigger": "manual"},
    "goal": {"criteria": {"property": "customer", "op": "eq", "value": True}},
    "actions": [
        {
            "id": "wait",
            "type": "wait_for_event",
            "event": "email_opened",
            "where": {"campaign": "welcome"},
            "timeout": "3d",
            "on_timeout": "nudge",
        },
        {
            "id": "thanks",
            "type": "set_property",
            "property": "engaged",
            "value": True,
            "next": "end",
        },
        {"id": "nudge", "type": "set_property", "property": "engaged", "value": False},
    ],
}


def dispatcher(app: App, env: WorkflowEnvironment) -> Dispatcher:
    return Dispatcher(app.sessions, env.client, task_queue=app.settings.task_queue)


def steps(app: App, key: str) -> list[tuple[str, str | None]]:
    [enrollment] = services.list_enrollments(app, key)
    return [(s["action_id"], s["outcome"]) for s in enrollment["steps"]]


async def test_event_reaches_a_running_wait_through_the_dispatcher(app, env, new_worker, publish):
    await publish(WAITING)
    services.set_record(app, "contact", "ann", {"email": "ann@example.com"})
    feed = dispatcher(app, env)
    await feed.dispatch_pending()
    async with new_worker():
        workflow_id = await enroll_one(app, "opened", "ann")
        await until_waiting(app, "opened", "wait")
        services.track_event(app, "contact", "ann", "email_opened", {"campaign": "other"})
        services.track_event(app, "contact", "ann", "email_opened", {"campaign": "welcome"})
        await feed.dispatch_pending()
        result = await result_of(env, workflow_id)
    assert result.status == "completed"
    assert steps(app, "opened") == [
        ("wait", "event email_opened received"),
        ("thanks", "engaged = true"),
    ]
    assert services.show_record(app, "contact", "ann")["properties"]["engaged"] is True


async def test_without_the_event_the_wait_times_out(app, env, new_worker, publish):
    await publish(WAITING)
    services.set_record(app, "contact", "bob", {"email": "bob@example.com"})
    async with new_worker():
        workflow_id = await enroll_one(app, "opened", "bob")
        result = await result_of(env, workflow_id)
    assert result.status == "completed"
    assert steps(app, "opened") == [
        ("wait", "no email_opened within 3d: -> nudge"),
        ("nudge", "engaged = false"),
    ]


async def test_goal_met_during_a_wait_for_event(app, env, new_worker, publish):
    await publish(WAITING)
    services.set_record(app, "contact", "cy", {"email": "cy@example.com"})
    feed = dispatcher(app, env)
    await feed.dispatch_pending()
    async with new_worker():
        workflow_id = await enroll_one(app, "opened", "cy")
        await until_waiting(app, "opened", "wait")
        services.set_record(app, "contact", "cy", {"customer": True})
        await feed.dispatch_pending()
        result = await result_of(env, workflow_id)
    assert (result.status, result.reason) == ("goal_met", "goal met")
    assert steps(app, "opened") == [("wait", "interrupted: goal_met")]


async def tomorrow_only_window(env: WorkflowEnvironment) -> dict[str, object]:
    """A window open only on the server's tomorrow (the shared server's clock runs ahead of the
    wall clock: earlier tests skipped time)."""
    tomorrow = (await env.get_current_time()).astimezone(UTC) + timedelta(days=1)
    return {"days": [tomorrow.strftime("%a").lower()], "from": "09:00", "to": "17:00"}


async def held_email(env: WorkflowEnvironment) -> dict[str, object]:
    """One email, in a window that is closed now."""
    return {
        "key": "held",
        "name": "Held",
        "enrollment": {"trigger": "manual"},
        "actions": [{"id": "hello", "type": "send_email", "subject": "Hi", "body": "."}],
        "settings": {"execution_window": await tomorrow_only_window(env)},
    }


async def test_unenrolled_while_held_by_the_window(app, env, new_worker, publish):
    await publish(await held_email(env))
    services.set_record(app, "contact", "dee", {"email": "dee@example.com"})
    async with new_worker():
        workflow_id = await enroll_one(app, "held", "dee")
        handle = env.client.get_workflow_handle(workflow_id)
        # Held: the enrollment is on its first action, which has not run.
        for _ in range(300):
            if await handle.query(EnrollmentWorkflow.current_action) == "hello":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the enrollment never reached its action")
        await handle.signal(EnrollmentWorkflow.unenroll, UnenrollSignal(reason="by hand"))
        result = await result_of(env, workflow_id)
    assert (result.status, result.reason) == ("unenrolled", "by hand")
    assert services.outbox(app) == []


async def test_window_holds_until_the_next_allowed_moment_on_the_store(
    app, env, new_worker, publish
):
    await publish(await held_email(env))
    services.set_record(app, "contact", "eve", {"email": "eve@example.com"})
    tomorrow = (await env.get_current_time()).astimezone(UTC).date() + timedelta(days=1)
    async with new_worker():
        workflow_id = await enroll_one(app, "held", "eve")
        await result_of(env, workflow_id)
        history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    [message] = services.outbox(app)
    sent = datetime.fromisoformat(message["sent_at"])
    assert sent.astimezone(UTC).date() == tomorrow
    assert sent.astimezone(UTC).hour == 9
    [(_, outcome)] = steps(app, "held")
    assert "held by the execution window" in outcome
    # The history with the window's timer replays.
    replayer = Replayer(
        workflows=[EnrollmentWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandboxed_workflow_runner(),
    )
    saved = json.dumps(history.to_json_dict())
    await replayer.replay_workflow(WorkflowHistory.from_json(workflow_id, json.loads(saved)))


async def test_split_and_wait_histories_replay(app, env, new_worker, publish):
    split = {
        "key": "split",
        "name": "Split",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {
                "id": "ab",
                "type": "split",
                "paths": [{"percent": 50, "next": "a"}, {"percent": 50, "next": "b"}],
            },
            {"id": "a", "type": "delay", "until_time": "09:00", "next": "end"},
            {"id": "b", "type": "wait_for_event", "event": "never", "timeout": "1d"},
        ],
    }
    await publish(split)
    replayer = Replayer(
        workflows=[EnrollmentWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandboxed_workflow_runner(),
    )
    async with new_worker():
        for name in ("r1", "r2", "r3", "r4", "r5", "r6"):
            services.set_record(app, "contact", name, {})
            workflow_id = await enroll_one(app, "split", name)
            await result_of(env, workflow_id)
            history = await env.client.get_workflow_handle(workflow_id).fetch_history()
            # A replay that took the other path would issue other commands and fail.
            await replayer.replay_workflow(history)


async def test_a_history_recorded_with_the_previous_code_replays():
    """Recorded by histories/record_main_history.py with the code before this change (split,
    value_branch, duration and until_date delays, store actions): it must replay unchanged."""
    saved = json.loads(
        (Path(__file__).parent / "histories" / "main_legacy_enrollment.json").read_text()
    )
    replayer = Replayer(
        workflows=[EnrollmentWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandboxed_workflow_runner(),
    )
    history = WorkflowHistory.from_json(saved["workflow_id"], saved["history"])
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None


async def test_a_scheduled_run_enrolls_records_whose_actions_respect_pause_dates(
    app, env, new_worker, publish
):
    """A run of a scheduled workflow (the workflow its Temporal Schedule starts; the test
    server has no Schedules, so the run is started directly) enrolls through the same
    interpreter: on a pause date its actions wait for the next day."""
    today = (await env.get_current_time()).astimezone(UTC).date()
    scheduled = {
        "key": "digest",
        "name": "Digest",
        "enrollment": {
            "trigger": "schedule",
            "criteria": {"property": "email", "op": "known"},
            "schedule": {"every": "day", "at": "08:00"},
        },
        "actions": [{"id": "digest", "type": "send_email", "subject": "Digest", "body": "."}],
        "settings": {"pause_dates": [today.isoformat()]},
    }
    await publish(scheduled, activate=False)
    with app.sessions.begin() as session:
        # What `activate` does besides creating the Temporal Schedule.
        WorkflowRepository(session).set_active("digest", True, now=datetime.now(UTC))
    services.set_record(app, "contact", "fay", {"email": "fay@example.com"})
    async with new_worker():
        run = await env.client.execute_workflow(
            ScheduledRunWorkflow.run,
            ScheduledRunInput(workflow_key="digest"),
            id=f"digest-run-{today}",
            task_queue=app.settings.task_queue,
        )
        assert run.enrolled == 1
        [enrollment] = services.list_enrollments(app, "digest")
        await result_of(env, enrollment["temporal_workflow_id"])
    [message] = services.outbox(app)
    sent = datetime.fromisoformat(message["sent_at"]).astimezone(UTC)
    assert sent.date() == today + timedelta(days=1)
    assert (sent.hour, sent.minute) == (0, 0)
    [(_, outcome)] = steps(app, "digest")
    assert "held by a pause date" in outcome


async def test_value_branch_takes_the_case_of_the_value(app, env, new_worker, publish):
    routing = {
        "key": "routing",
        "name": "Routing",
        "enrollment": {"trigger": "manual"},
        "actions": [
            {
                "id": "by-plan",
                "type": "value_branch",
                "property": "plan",
                "cases": {"pro": "pro", "10": "ten"},
                "otherwise": "other",
            },
            {
                "id": "pro",
                "type": "set_property",
                "property": "path",
                "value": "pro",
                "next": "end",
            },
            {
                "id": "ten",
                "type": "set_property",
                "property": "path",
                "value": "ten",
                "next": "end",
            },
            {"id": "other", "type": "set_property", "property": "path", "value": "other"},
        ],
    }
    await publish(routing)
    cases = {"p1": "Pro", "p2": 10, "p3": "free", "p4": None}
    async with new_worker():
        for record_id, plan in cases.items():
            services.set_record(app, "contact", record_id, {"plan": plan, "x": 1})
            await result_of(env, await enroll_one(app, "routing", record_id))
    paths = {r: services.show_record(app, "contact", r)["properties"]["path"] for r in cases}
    assert paths == {"p1": "pro", "p2": "ten", "p3": "other", "p4": "other"}
    outcomes = {
        e["record_id"]: e["steps"][0]["outcome"] for e in services.list_enrollments(app, "routing")
    }
    assert outcomes["p1"] == "plan is 'Pro': case 'pro'"
    assert outcomes["p4"] == "plan is (unknown): otherwise"

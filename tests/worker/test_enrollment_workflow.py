"""The enrollment interpreter on the time-skipping test server, against a real store."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from crmflow import services
from crmflow.activities.enrollments import EnrollmentActivities
from crmflow.activities.messages import MessageActivities
from crmflow.activities.models import ActionInput, ActionResult, EnrollmentResult
from crmflow.activities.records import RecordActivities
from crmflow.services import App
from crmflow.worker import EnrollmentWorkflow, sandboxed_workflow_runner, workflow_runner
from crmflow.worker import search_attributes as sa

WELCOME: dict[str, Any] = {
    "key": "welcome",
    "name": "Welcome series",
    "enrollment": {"trigger": "manual"},
    "actions": [
        {"id": "qualify", "type": "set_property", "property": "lifecycle_stage", "value": "lead"},
        {
            "id": "route",
            "type": "branch",
            "branches": [
                {
                    "name": "vip",
                    "when": {"property": "vip", "op": "eq", "value": True},
                    "next": "alert",
                }
            ],
            "otherwise": "welcome",
        },
        {
            "id": "alert",
            "type": "notify",
            "to": "sales@example.com",
            "subject": "VIP {{ record.firstname }}",
            "body": "Call them",
            "next": "end",
        },
        {
            "id": "welcome",
            "type": "send_email",
            "subject": "Welcome, {{ record.firstname }}",
            "body": "Hello {{ record.firstname }} from {{ workflow.name }}",
        },
        {"id": "wait", "type": "delay", "duration": "3d"},
        {"id": "bump", "type": "increment_property", "property": "touches", "by": 1},
        {
            "id": "call",
            "type": "create_task",
            "title": "Call {{ record.firstname }}",
            "due_in": "1d",
            "assignee": "{{ record.owner }}",
        },
    ],
}

# The steps an enrollment in WELCOME stores on the path its non-VIP contacts take.
WELCOME_PATH = ["qualify", "route", "welcome", "wait", "bump", "call"]
# The activities of that path's store actions (qualify, route, bump, call): local activities
# in runs of generation >= 2.
WELCOME_LOCAL_ACTIVITIES = ["update_record", "evaluate_branch", "update_record", "create_task"]


async def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll (real time) until predicate() is truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def until_waiting(app: App, key: str = "welcome", action_id: str = "wait") -> None:
    """Until the first enrollment of `key` has started its delay `action_id`."""
    await wait_for(
        lambda: any(
            s["action_id"] == action_id for s in services.list_enrollments(app, key)[0]["steps"]
        )
    )


async def enroll_one(app: App, key: str, record_id: str) -> str:
    [outcome] = await services.enroll(app, key, [record_id])
    assert outcome.ok, outcome.message
    assert outcome.temporal_workflow_id
    return outcome.temporal_workflow_id


async def result_of(env: WorkflowEnvironment, workflow_id: str) -> EnrollmentResult:
    # Enrollments start in the service layer, so the handle is not the test environment's own:
    # unlock time skipping explicitly while waiting for the result.
    handle = env.client.get_workflow_handle(workflow_id, result_type=EnrollmentResult)
    async with env.time_skipping_unlocked():
        return await handle.result()


def history_json(history: WorkflowHistory) -> dict[str, Any]:
    saved: dict[str, Any] = json.loads(json.dumps(history.to_json_dict()))
    return saved


def markers(saved: dict[str, Any]) -> list[str]:
    return [
        e["markerRecordedEventAttributes"]["markerName"]
        for e in saved["events"]
        if "markerRecordedEventAttributes" in e
    ]


def activity_tasks(saved: dict[str, Any]) -> list[str]:
    """The activity types of the activity tasks a history (saved JSON) schedules, in order."""
    return [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in saved["events"]
        if "activityTaskScheduledEventAttributes" in e
    ]


def local_activity_events(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The local activity markers of a history (saved JSON), in order."""
    return [
        e
        for e in saved["events"]
        if e.get("markerRecordedEventAttributes", {}).get("markerName") == "core_local_activity"
    ]


def local_activities(saved: dict[str, Any]) -> list[str]:
    """The activity types of the local activities a history (saved JSON) records, in order."""
    found = []
    for e in local_activity_events(saved):
        [payload] = e["markerRecordedEventAttributes"]["details"]["data"]["payloads"]
        found.append(json.loads(base64.b64decode(payload["data"]))["activity_type"])
    return found


def worker_with(
    env: WorkflowEnvironment, app: App, **replaced: Callable[[ActionInput], ActionResult]
) -> Worker:
    """A worker of the enrollment workflow and the store activities it calls, the ones named in
    `replaced` swapped for the functions given (a crash, a gate)."""
    records, messages = RecordActivities(app.sessions), MessageActivities(app.sessions)
    enrollments = EnrollmentActivities(app.sessions)
    real: list[Callable[..., Any]] = [
        records.update_record,
        messages.send_email,
        messages.create_task,
        enrollments.evaluate_branch,
        enrollments.record_step,
        enrollments.finish_enrollment,
        enrollments.read_timing,
    ]
    activities = [
        activity.defn(name=name)(replaced[name]) if name in replaced else function
        for function in real
        for name in [function.__name__]
    ]
    return Worker(
        env.client,
        task_queue=app.settings.task_queue,
        workflows=[EnrollmentWorkflow],
        activities=activities,
        activity_executor=ThreadPoolExecutor(4),
        workflow_runner=workflow_runner(),
    )


async def test_runs_every_step_and_a_three_day_delay_in_moments(app, env, new_worker, publish):
    await publish(WELCOME)
    services.set_record(
        app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com", "owner": "bob"}
    )
    async with new_worker():
        workflow_id = await enroll_one(app, "welcome", "ann")
        assert workflow_id == "welcome:contact:ann:1"
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await result_of(env, workflow_id)
        assert loop.time() - started < 30  # 3 simulated days, not 3 real ones
    assert result.status == "completed"
    [enrollment] = services.list_enrollments(app, "welcome")
    assert enrollment["status"] == "completed"
    assert enrollment["ended_at"] is not None
    steps = enrollment["steps"]
    assert [s["action_id"] for s in steps] == WELCOME_PATH
    assert steps[1]["outcome"] == "no branch matched: otherwise"
    assert steps[3]["outcome"].startswith("waited until")
    from datetime import datetime

    waited = datetime.fromisoformat(steps[3]["finished_at"]) - datetime.fromisoformat(
        steps[3]["started_at"]
    )
    assert waited >= timedelta(days=3)
    record = services.show_record(app, "contact", "ann")
    assert record["properties"]["lifecycle_stage"] == "lead"
    assert record["properties"]["touches"] == 1
    [mail] = services.outbox(app)
    assert mail["to"] == "ann@example.com"
    assert mail["subject"] == "Welcome, Ann"
    assert mail["body"] == "Hello Ann from Welcome series"
    [task] = services.tasks(app)
    assert task["title"] == "Call Ann" and task["assignee"] == "bob"
    description = await env.client.get_workflow_handle(workflow_id).describe()
    attributes = description.typed_search_attributes
    assert attributes.get(sa.WORKFLOW_KEY) == "welcome"
    assert attributes.get(sa.RECORD_ID) == "ann"
    assert attributes.get(sa.VERSION) == 1
    assert attributes.get(sa.STATUS) == "completed"


async def test_branch_takes_the_matching_path_and_goto_end(app, env, new_worker, publish):
    await publish(WELCOME)
    services.set_record(app, "contact", "vic", {"firstname": "Vic", "vip": True})
    async with new_worker():
        result = await result_of(env, await enroll_one(app, "welcome", "vic"))
    assert result.status == "completed"
    [enrollment] = services.list_enrollments(app, "welcome")
    assert [s["action_id"] for s in enrollment["steps"]] == ["qualify", "route", "alert"]
    assert enrollment["steps"][1]["outcome"] == "branch 'vip'"
    [mail] = services.outbox(app)
    assert mail["to"] == "sales@example.com" and mail["subject"] == "VIP Vic"


async def test_unenroll_takes_effect_during_a_delay(app, env, new_worker, publish):
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker():
        workflow_id = await enroll_one(app, "welcome", "ann")
        await until_waiting(app)
        [outcome] = await services.unenroll(app, "welcome", ["ann"])
        assert outcome.ok and outcome.message == "unenrolled"
        result = await result_of(env, workflow_id)
    assert result.status == "unenrolled"
    [enrollment] = services.list_enrollments(app, "welcome")
    assert enrollment["status"] == "unenrolled"
    assert enrollment["reason"] == "unenrolled manually"
    assert enrollment["steps"][-1]["action_id"] == "wait"
    assert enrollment["steps"][-1]["outcome"] == "interrupted: unenrolled"
    assert services.tasks(app) == []


async def test_one_running_enrollment_per_record_then_reenrollment_after_the_end(
    app, env, new_worker, publish
):
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker():
        first = await enroll_one(app, "welcome", "ann")
        [again] = await services.enroll(app, "welcome", ["ann"])
        assert not again.ok and "already enrolled" in again.message
        await result_of(env, first)
        second = await enroll_one(app, "welcome", "ann")
        assert second == "welcome:contact:ann:2"
        await result_of(env, second)
    assert [e["status"] for e in services.list_enrollments(app, "welcome")] == ["completed"] * 2
    assert len(services.outbox(app)) == 2


async def test_deactivation_holds_before_the_next_action_and_activation_resumes(
    app, env, new_worker, publish
):
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker():
        workflow_id = await enroll_one(app, "welcome", "ann")
        await until_waiting(app)
        await services.deactivate(app, "welcome")
        assert services.list_enrollments(app, "welcome")[0]["status"] == "paused"
        handle = env.client.get_workflow_handle(workflow_id)
        # Let the 3-day delay elapse: the enrollment must then hold before 'bump'.
        await env.sleep(timedelta(days=4))
        await wait_for(
            lambda: services.list_enrollments(app, "welcome")[0]["steps"][-1]["finished_at"]
        )
        await asyncio.sleep(0.5)
        assert [s["action_id"] for s in services.list_enrollments(app, "welcome")[0]["steps"]][
            -1
        ] == "wait"
        description = await handle.describe()
        assert description.typed_search_attributes.get(sa.STATUS) == "paused"
        await services.activate(app, "welcome")
        result = await result_of(env, workflow_id)
    assert result.status == "completed"
    assert services.list_enrollments(app, "welcome")[0]["steps"][-1]["action_id"] == "call"


async def test_deactivate_with_unenroll_all_ends_running_enrollments(app, env, new_worker, publish):
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker():
        workflow_id = await enroll_one(app, "welcome", "ann")
        await until_waiting(app)
        await services.deactivate(app, "welcome", unenroll_all=True)
        result = await result_of(env, workflow_id)
    assert result.status == "unenrolled"
    assert (
        services.list_enrollments(app, "welcome")[0]["reason"]
        == "workflow deactivated with --unenroll-all"
    )


async def test_goal_signal_ends_the_enrollment_as_goal_met(app, env, new_worker, publish):
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker():
        workflow_id = await enroll_one(app, "welcome", "ann")
        await until_waiting(app)
        from crmflow.activities.models import GoalMetSignal

        await env.client.get_workflow_handle(workflow_id).signal(
            EnrollmentWorkflow.goal_met, GoalMetSignal(detail="became a customer")
        )
        result = await result_of(env, workflow_id)
    assert (result.status, result.reason) == ("goal_met", "became a customer")
    assert services.list_enrollments(app, "welcome")[0]["status"] == "goal_met"


async def test_new_version_leaves_running_enrollments_on_theirs(app, env, new_worker, publish):
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    services.set_record(app, "contact", "bea", {"firstname": "Bea", "email": "bea@example.com"})
    async with new_worker():
        first = await enroll_one(app, "welcome", "ann")
        await until_waiting(app)
        changed = {
            **WELCOME,
            "actions": [*WELCOME["actions"][:4], {"id": "wait", "type": "delay", "duration": "1h"}],
        }
        await publish(changed, activate=False)
        second = await enroll_one(app, "welcome", "bea")
        await result_of(env, first)
        await result_of(env, second)
    ann, bea = services.list_enrollments(app, "welcome")
    assert (ann["version"], bea["version"]) == (1, 2)
    assert ann["steps"][-1]["action_id"] == "call"
    assert bea["steps"][-1]["action_id"] == "wait"


_crash_once: set[str] = set()


async def test_an_effect_happens_once_when_the_worker_dies_after_it(app, env, publish):
    """The activity commits its effect, then dies before Temporal hears back: the retry must find
    the step and not send, create or increment a second time."""
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    records, messages = RecordActivities(app.sessions), MessageActivities(app.sessions)

    def crash_after(
        real: Callable[[ActionInput], ActionResult],
    ) -> Callable[[ActionInput], ActionResult]:
        def run(input: ActionInput) -> ActionResult:
            result = real(input)
            if input.action.id not in _crash_once:
                _crash_once.add(input.action.id)
                raise RuntimeError("worker died after the effect was committed")
            return result

        return run

    worker = worker_with(
        env,
        app,
        update_record=crash_after(records.update_record),
        send_email=crash_after(messages.send_email),
        create_task=crash_after(messages.create_task),
    )
    async with worker:
        workflow_id = await enroll_one(app, "welcome", "ann")
        result = await result_of(env, workflow_id)
        history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    assert result.status == "completed"
    assert {"qualify", "welcome", "bump", "call"} <= _crash_once
    # The retried `welcome` returned the start of the delay its first attempt stored: the
    # delay took it up rather than storing its start again (in a local activity). The local
    # activities are the store actions, each retried once after its crash.
    assert local_activities(history_json(history)) == WELCOME_LOCAL_ACTIVITIES
    assert len(services.outbox(app)) == 1
    assert len(services.tasks(app)) == 1
    assert services.show_record(app, "contact", "ann")["properties"]["touches"] == 1
    steps = services.list_enrollments(app, "welcome")[0]["steps"]
    assert len(steps) == len({s["action_id"] for s in steps}) == 6


async def test_permanent_failures_are_recorded_and_the_enrollment_goes_on(
    app, env, new_worker, publish
):
    await publish(WELCOME)
    services.set_record(app, "contact", "nomail", {"firstname": "No", "touches": "many"})
    async with new_worker():
        result = await result_of(env, await enroll_one(app, "welcome", "nomail"))
    assert result.status == "completed"
    steps = {
        s["action_id"]: s["outcome"] for s in services.list_enrollments(app, "welcome")[0]["steps"]
    }
    assert steps["welcome"] == "failed: the record has no email address"
    assert steps["bump"] == 'failed: touches is "many", not a number'
    assert steps["call"].startswith("task 'Call No'")


async def test_an_increment_beyond_the_numbers_a_store_holds_fails_the_step(
    app, env, new_worker, publish
):
    await publish(
        {
            "key": "grow",
            "name": "Grow",
            "enrollment": {"trigger": "manual"},
            "actions": [{"id": "bump", "type": "increment_property", "property": "n", "by": 1e308}],
        }
    )
    services.set_record(app, "contact", "big", {"n": 1e308})
    async with new_worker():
        result = await result_of(env, await enroll_one(app, "grow", "big"))
    assert result.status == "completed"
    [enrollment] = services.list_enrollments(app, "grow")
    assert enrollment["steps"][0]["outcome"] == "failed: n + 1e+308 is out of range"
    # Unchanged, not infinity (PostgreSQL's JSONB gives 1e308 back as the integer 10**308).
    assert float(services.show_record(app, "contact", "big")["properties"]["n"]) == 1e308


async def test_history_replays_deterministically(app, env, new_worker, publish):
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker():
        workflow_id = await enroll_one(app, "welcome", "ann")
        await result_of(env, workflow_id)
        history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    saved = json.dumps(history.to_json_dict())
    replayer = Replayer(
        workflows=[EnrollmentWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandboxed_workflow_runner(),
    )
    await replayer.replay_workflow(WorkflowHistory.from_json(workflow_id, json.loads(saved)))


def test_the_interpreter_runs_every_action_type_of_the_definition_format():
    from typing import get_args

    from crmflow.definitions import Action
    from crmflow.worker import EXECUTABLE_ACTION_TYPES

    union = get_args(Action)[0]
    types = {get_args(model.model_fields["type"].annotation)[0] for model in get_args(union)}
    assert len(types) == 19
    assert types == set(EXECUTABLE_ACTION_TYPES)

"""A duration delay that directly follows an action is stored as started by that action's
transaction (runs of generation >= 1), at the moment the action finished: no store write and no
local activity of its own. A stop or a pause that comes while the action runs, and a run that
continues as new there, treat the delay as begun."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from test_continue_as_new import replayer, runs
from test_enrollment_workflow import (
    WELCOME,
    WELCOME_LOCAL_ACTIVITIES,
    WELCOME_PATH,
    enroll_one,
    history_json,
    local_activities,
    markers,
    result_of,
    wait_for,
    worker_with,
)

from crmflow import services
from crmflow.activities.messages import MessageActivities
from crmflow.activities.models import ActionInput, ActionResult, EnrollmentInput, EnrollmentResult
from crmflow.enrolling import _starting
from crmflow.services import App
from crmflow.worker import _policies


def steps(app: App, key: str = "welcome") -> list[dict[str, Any]]:
    return list(services.list_enrollments(app, key)[0]["steps"])


def step(app: App, action_id: str, key: str = "welcome") -> dict[str, Any]:
    [found] = [s for s in steps(app, key) if s["action_id"] == action_id]
    return found


class Gate:
    """Holds the `send_email` activity until opened, so that a test can signal meanwhile."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def around(
        self, real: Callable[[ActionInput], ActionResult]
    ) -> Callable[[ActionInput], ActionResult]:
        def run(input: ActionInput) -> ActionResult:
            self.entered.set()
            assert self.opened.wait(30), "the test never opened the gate"
            return real(input)

        return run


@pytest.fixture
def gated_worker(env: WorkflowEnvironment, app: App) -> Callable[[Gate], Worker]:
    def start(gate: Gate) -> Worker:
        messages = MessageActivities(app.sessions)
        return worker_with(env, app, send_email=gate.around(messages.send_email))

    return start


async def enroll_held(app: App, publish: Callable[..., Any], gate: Gate) -> str:
    """Ann enrolled in WELCOME, her `welcome` email held by the gate (the worker runs)."""
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    workflow_id = await enroll_one(app, "welcome", "ann")
    assert await asyncio.to_thread(gate.entered.wait, 15)
    return workflow_id


async def welcome_run(
    app: App, env: WorkflowEnvironment, worker: Worker, publish: Callable[..., Any], name: str
) -> tuple[EnrollmentResult, WorkflowHistory]:
    """`name`'s contact (id: the name lower-cased) enrolled in WELCOME and run to its end by
    `worker`: the result and the history of its one run."""
    record_id = name.lower()
    await publish(WELCOME)
    services.set_record(
        app, "contact", record_id, {"firstname": name, "email": f"{record_id}@example.com"}
    )
    async with worker:
        workflow_id = await enroll_one(app, "welcome", record_id)
        result = await result_of(env, workflow_id)
        [history] = await runs(env, workflow_id)
    return result, history


async def test_the_delay_is_stored_as_started_by_the_action_before_it(
    app, env, new_worker, publish
):
    await publish(WELCOME)
    services.set_record(app, "contact", "ann", {"firstname": "Ann", "email": "ann@example.com"})
    async with new_worker():
        workflow_id = await enroll_one(app, "welcome", "ann")
        await wait_for(lambda: any(s["action_id"] == "wait" for s in steps(app)))
        welcome, wait = step(app, "welcome"), step(app, "wait")
        # Shown at once, in progress, from the moment the email step finished.
        assert wait["started_at"] == welcome["finished_at"]
        wake = datetime.fromisoformat(wait["started_at"]) + timedelta(days=3)
        assert wait["outcome"] == f"waiting until {wake.isoformat()}"
        assert wait["finished_at"] is None
        result = await result_of(env, workflow_id)
        [history] = await runs(env, workflow_id)
    assert result.status == "completed"
    # No local activity stored the delay's start (nor anything else: the delay's end went
    # with `bump`, the final status with `call`): the local activities are the store actions'.
    assert local_activities(history_json(history)) == WELCOME_LOCAL_ACTIVITIES
    assert (await replayer().replay_workflow(history)).replay_failure is None
    wait = step(app, "wait")
    assert wait["outcome"] == f"waited until {wake.isoformat()}"
    assert datetime.fromisoformat(wait["finished_at"]) >= wake
    assert [s["action_id"] for s in steps(app)] == WELCOME_PATH


async def test_a_run_whose_input_predates_generations_stores_the_delay_start_itself(
    app, env, new_worker, publish, monkeypatch
):
    """Generation 0 (an input written by a starter from before the field, an enrollment started
    just before an upgrade): the delay stores its own start, in a local activity, as before."""
    monkeypatch.setattr(_starting, "GENERATION", 0)
    result, history = await welcome_run(app, env, new_worker(), publish, "Bo")
    assert result.status == "completed"
    assert markers(history_json(history)) == ["core_patch", "core_local_activity"]
    assert (await replayer().replay_workflow(history)).replay_failure is None
    assert step(app, "wait")["outcome"].startswith("waited until")


async def test_an_unenrollment_while_the_action_runs_interrupts_the_delay(
    app, env, gated_worker, publish
):
    gate = Gate()
    async with gated_worker(gate):
        workflow_id = await enroll_held(app, publish, gate)
        [outcome] = await services.unenroll(app, "welcome", ["ann"])
        assert outcome.ok
        gate.opened.set()
        result = await result_of(env, workflow_id)
        [history] = await runs(env, workflow_id)
    assert result.status == "unenrolled"
    assert (await replayer().replay_workflow(history)).replay_failure is None
    assert [(s["action_id"], s["outcome"]) for s in steps(app)][2:] == [
        ("welcome", "email to ann@example.com: Welcome, Ann"),
        ("wait", "interrupted: unenrolled"),
    ]
    wait = step(app, "wait")
    assert (
        wait["finished_at"] is not None
        and wait["started_at"] == step(app, "welcome")["finished_at"]
    )
    assert services.list_enrollments(app, "welcome")[0]["status"] == "unenrolled"
    assert services.tasks(app) == []


async def test_a_pause_while_the_action_runs_lets_the_delay_count_down_and_holds_the_next(
    app, env, gated_worker, publish
):
    gate = Gate()
    async with gated_worker(gate):
        workflow_id = await enroll_held(app, publish, gate)
        await services.deactivate(app, "welcome")
        gate.opened.set()
        await wait_for(lambda: any(s["action_id"] == "wait" for s in steps(app)))
        await env.sleep(timedelta(days=4))
        # The delay ran its course while paused; the next action waits for the activation.
        await wait_for(lambda: step(app, "wait")["finished_at"])
        await asyncio.sleep(0.5)
        assert steps(app)[-1]["action_id"] == "wait"
        assert step(app, "wait")["outcome"].startswith("waited until")
        assert services.list_enrollments(app, "welcome")[0]["status"] == "paused"
        await services.activate(app, "welcome")
        result = await result_of(env, workflow_id)
        [history] = await runs(env, workflow_id)
    assert result.status == "completed"
    assert (await replayer().replay_workflow(history)).replay_failure is None
    assert steps(app)[-1]["action_id"] == "call"


LONG = {
    "key": "long",
    "name": "Long before its delay",
    "enrollment": {"trigger": "manual"},
    "actions": [
        # Emails: activity tasks (store actions run as local activities make no events of
        # their own to grow the history with).
        {"id": "one", "type": "send_email", "to": "a@example.com", "subject": "a", "body": "."},
        {"id": "two", "type": "send_email", "to": "b@example.com", "subject": "b", "body": "."},
        {"id": "wait", "type": "delay", "duration": "1d"},
        {"id": "three", "type": "set_property", "property": "c", "value": 3},
    ],
}


async def test_a_run_that_continues_as_new_at_the_delay_keeps_its_start_and_end(
    app, env, new_worker, publish, monkeypatch
):
    # Two activity tasks make 15 events: past this limit just as the delay begins (not before).
    monkeypatch.setattr(_policies, "HISTORY_LIMIT", 12, raising=False)
    await publish(LONG)
    services.set_record(app, "contact", "cy", {})
    async with new_worker():
        workflow_id = await enroll_one(app, "long", "cy")
        result = await result_of(env, workflow_id)
        histories = await runs(env, workflow_id)
    assert (result.status, result.steps) == ("completed", 4)
    assert len(histories) == 2
    first, second = histories
    carried = second.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    resume = EnrollmentInput.model_validate_json(carried.data).resume
    assert resume is not None and (resume.action_id, resume.wait) == ("wait", "delay")
    for history in histories:
        assert (await replayer().replay_workflow(history)).replay_failure is None
    two, wait = step(app, "two", "long"), step(app, "wait", "long")
    wake = datetime.fromisoformat(two["finished_at"]) + timedelta(days=1)
    assert wait["started_at"] == two["finished_at"]
    assert wait["outcome"] == f"waited until {wake.isoformat()}"
    assert [s["action_id"] for s in steps(app, "long")] == ["one", "two", "wait", "three"]

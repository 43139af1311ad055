"""Bounded histories: an enrollment whose history grows long (here: a lowered HISTORY_LIMIT)
continues as new in the middle of what made it grow (a wait_for_event receiving events that do
not match, pause/resume cycles during a delay, a long rate-limit queue) and picks the wait up
where it stopped. Histories recorded before continue-as-new existed, and the histories of the
continued runs, replay."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from test_enrollment_workflow import enroll_one, result_of, until_waiting
from test_waits import held_email

from crmflow import services
from crmflow.activities._once import run_outward
from crmflow.activities.enrollments import EnrollmentActivities
from crmflow.activities.models import ActionInput, ActionResult, EventSignal, UnenrollSignal
from crmflow.activities.records import RecordActivities
from crmflow.enrolling import _starting
from crmflow.services import App
from crmflow.worker import EnrollmentWorkflow, _policies, sandboxed_workflow_runner, workflow_runner
from crmflow.worker._enrollment import CONTINUE_AS_NEW

LIMIT = 40  # events: a few signals or timers are enough to continue as new


@pytest.fixture
def short_histories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_policies, "HISTORY_LIMIT", LIMIT, raising=False)


def replayer() -> Replayer:
    return Replayer(
        workflows=[EnrollmentWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=sandboxed_workflow_runner(),
    )


async def runs(env: WorkflowEnvironment, workflow_id: str) -> list[WorkflowHistory]:
    """The history of each run of the workflow id, first to last (each run's start names the
    run it continues)."""
    histories: list[WorkflowHistory] = []
    run_id: str | None = None
    while True:
        handle = env.client.get_workflow_handle(workflow_id, run_id=run_id)
        history = await handle.fetch_history()
        histories.insert(0, history)
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id or None
        if run_id is None:
            return histories


async def continued(env: WorkflowEnvironment, workflow_id: str) -> bool:
    """Until the enrollment has gone on in a new run (False if it does not)."""
    for _ in range(300):
        history = await env.client.get_workflow_handle(workflow_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        if started.continued_execution_run_id:
            return True
        await asyncio.sleep(0.05)
    return False


def patch_events(saved: dict[str, Any], patch: str = CONTINUE_AS_NEW) -> list[str]:
    """The events a history (saved JSON) spends on `patch`: its marker, its
    TemporalChangeVersion upsert."""
    found = []
    for event in saved["events"]:
        marker = event.get("markerRecordedEventAttributes", {})
        if marker.get("markerName") == "core_patch":
            [data] = marker["details"]["patch-data"]["payloads"]
            if json.loads(base64.b64decode(data["data"]))["id"] == patch:
                found.append("marker")
        upserted = event.get("upsertWorkflowSearchAttributesEventAttributes", {})
        fields = upserted.get("searchAttributes", {}).get("indexedFields", {})
        versions = fields.get("TemporalChangeVersion")
        if versions and patch in json.loads(base64.b64decode(versions["data"])):
            found.append("TemporalChangeVersion")
    return found


async def replay_every_run(env: WorkflowEnvironment, workflow_id: str) -> int:
    """Replay each run's history (as saved JSON); returns how many runs there were. Every run of
    an enrollment started now may continue as new without recording a patch (its input's
    generation says so)."""
    count = 0
    for history in await runs(env, workflow_id):
        saved = json.loads(json.dumps(history.to_json_dict()))
        assert patch_events(saved) == []
        result = await replayer().replay_workflow(WorkflowHistory.from_json(workflow_id, saved))
        assert result.replay_failure is None
        # Continued at the first workflow task past the limit; signals that arrived while it
        # was continuing (the tests send up to 30 at once) are taken in the same run, each with
        # at most a workflow task of its own (4 events) on a busy machine.
        assert len(history.events) < LIMIT + 4 * 30 + 10
        count += 1
    return count


def steps(app: App, key: str) -> list[tuple[str, str | None]]:
    [enrollment] = services.list_enrollments(app, key)
    return [(s["action_id"], s["outcome"]) for s in enrollment["steps"]]


OPENED = {
    "key": "opened",
    "name": "Opened",
    "enrollment": {"trigger": "manual"},
    "actions": [
        {
            "id": "wait",
            "type": "wait_for_event",
            "event": "email_opened",
            "where": {"campaign": "welcome"},
            "timeout": "3d",
        },
        {"id": "thanks", "type": "set_property", "property": "engaged", "value": True},
    ],
}


async def continued_by_unmatched_events(
    app: App, env: WorkflowEnvironment, record_id: str
) -> WorkflowHandle[Any, Any]:
    """Enroll `record_id` in OPENED (the worker runs) and send its wait 30 email_opened events
    it does not take (another campaign), until the enrollment goes on in a new run."""
    workflow_id = await enroll_one(app, "opened", record_id)
    await until_waiting(app, "opened", "wait")
    handle = env.client.get_workflow_handle(workflow_id)
    for i in range(30):
        other = EventSignal(
            name="email_opened", properties={"campaign": f"c{i}"}, occurred_at=datetime.now(UTC)
        )
        await handle.signal(EnrollmentWorkflow.event_tracked, other)
    assert await continued(env, workflow_id)
    return handle


async def test_a_wait_receiving_many_events_that_do_not_match_continues_as_new(
    app, env, new_worker, publish, short_histories
):
    await publish(OPENED)
    services.set_record(app, "contact", "ann", {})
    async with new_worker():
        handle = await continued_by_unmatched_events(app, env, "ann")
        workflow_id = handle.id
        # The run that goes on is still this enrollment's (its identity travels along).
        assert await (await handle.describe()).memo_value("crmflow.enrollment", None)
        [(action, waiting)] = steps(app, "opened")  # still the one wait, still in progress
        assert action == "wait" and (waiting or "").startswith("waiting for email_opened until")
        welcome = EventSignal(
            name="email_opened", properties={"campaign": "welcome"}, occurred_at=datetime.now(UTC)
        )
        await handle.signal(EnrollmentWorkflow.event_tracked, welcome)
        result = await result_of(env, workflow_id)
        assert await replay_every_run(env, workflow_id) > 1
    assert (result.status, result.steps) == ("completed", 2)
    assert steps(app, "opened") == [
        ("wait", "event email_opened received"),
        ("thanks", "engaged = true"),
    ]


PAUSED = {
    "key": "paused",
    "name": "Paused",
    "enrollment": {"trigger": "manual"},
    "actions": [
        {"id": "wait", "type": "delay", "duration": "2d"},
        {"id": "done", "type": "set_property", "property": "done", "value": True},
    ],
}


async def test_pause_and_resume_cycles_during_a_delay_continue_as_new(
    app, env, new_worker, publish, short_histories
):
    await publish(PAUSED)
    services.set_record(app, "contact", "bob", {})
    async with new_worker():
        workflow_id = await enroll_one(app, "paused", "bob")
        await until_waiting(app, "paused", "wait")
        [(_, waiting)] = steps(app, "paused")
        assert waiting is not None and waiting.startswith("waiting until ")
        handle = env.client.get_workflow_handle(workflow_id)
        for _ in range(12):
            await handle.signal(EnrollmentWorkflow.pause)
            await handle.signal(EnrollmentWorkflow.resume)
        # Left paused: the next run must still hold before the next action.
        await handle.signal(EnrollmentWorkflow.pause)
        assert await continued(env, workflow_id)
        await handle.signal(EnrollmentWorkflow.resume)
        result = await result_of(env, workflow_id)
        assert await replay_every_run(env, workflow_id) > 1
    assert (result.status, result.steps) == ("completed", 2)
    wake = waiting.removeprefix("waiting until ")
    assert steps(app, "paused") == [("wait", f"waited until {wake}"), ("done", "done = true")]
    [enrollment] = services.list_enrollments(app, "paused")
    started, finished = (
        datetime.fromisoformat(enrollment["steps"][0][k]) for k in ("started_at", "finished_at")
    )
    assert finished >= datetime.fromisoformat(wake) and started < datetime.fromisoformat(wake)


async def test_an_unenrollment_after_continuing_as_new_ends_the_delay_it_resumed(
    app, env, new_worker, publish, short_histories
):
    await publish(PAUSED)
    services.set_record(app, "contact", "dan", {})
    async with new_worker():
        workflow_id = await enroll_one(app, "paused", "dan")
        await until_waiting(app, "paused", "wait")
        handle = env.client.get_workflow_handle(workflow_id)
        for _ in range(12):
            await handle.signal(EnrollmentWorkflow.pause)
            await handle.signal(EnrollmentWorkflow.resume)
        assert await continued(env, workflow_id)
        [outcome] = await services.unenroll(app, "paused", ["dan"])
        assert outcome.ok, outcome.message
        result = await result_of(env, workflow_id)
    assert (result.status, result.reason) == ("unenrolled", "unenrolled manually")
    assert steps(app, "paused") == [("wait", "interrupted: unenrolled")]


async def test_a_hold_by_the_execution_window_continues_as_new(
    app, env, new_worker, publish, short_histories
):
    """Held by a window open only tomorrow, the enrollment is paused and resumed again and
    again: it goes on in new runs, and the email goes out when the window opens, saying when it
    came due."""
    await publish(await held_email(env))
    services.set_record(app, "contact", "eve", {"email": "eve@example.com"})
    async with new_worker():
        workflow_id = await enroll_one(app, "held", "eve")
        handle = env.client.get_workflow_handle(workflow_id)
        for _ in range(300):
            if await handle.query(EnrollmentWorkflow.current_action) == "hello":
                break
            await asyncio.sleep(0.05)
        due = (await env.get_current_time()).astimezone(UTC)
        for _ in range(12):
            await handle.signal(EnrollmentWorkflow.pause)
            await handle.signal(EnrollmentWorkflow.resume)
        assert await continued(env, workflow_id)
        result = await result_of(env, workflow_id)
        assert await replay_every_run(env, workflow_id) > 1
    assert (result.status, result.steps) == ("completed", 1)
    [message] = services.outbox(app)
    assert datetime.fromisoformat(message["sent_at"]).astimezone(UTC).hour == 9
    [(action, outcome)] = steps(app, "held")
    assert action == "hello" and "held by the execution window" in (outcome or "")
    came_due = datetime.fromisoformat((outcome or "").split("came due ", 1)[1].split(",")[0])
    assert abs(came_due - due) < timedelta(minutes=1)  # the first run's due time, carried over


QUEUED = {
    "key": "queued",
    "name": "Queued",
    "enrollment": {"trigger": "manual"},
    "actions": [
        {"id": "notify", "type": "webhook", "url": "https://example.com/hook"},
        {"id": "done", "type": "set_property", "property": "done", "value": True},
    ],
}


async def test_a_long_rate_limit_queue_continues_as_new(app, env, publish, short_histories):
    """The webhook activity is replaced by one whose rate limit keeps it queued 25 times."""
    await publish(QUEUED)
    services.set_record(app, "contact", "cy", {})
    turns = {"n": 0}

    @activity.defn(name="call_webhook")
    async def queued_webhook(input: ActionInput) -> ActionResult:
        turns["n"] += 1
        if turns["n"] <= 25:
            return ActionResult(outcome="3 requests queued", retry_in=60)

        async def deliver() -> ActionResult:
            return ActionResult(outcome="200 OK")

        return await run_outward(app.sessions, input, deliver)

    store = EnrollmentActivities(app.sessions)
    records = RecordActivities(app.sessions)
    worker = Worker(
        env.client,
        task_queue=app.settings.task_queue,
        workflows=[EnrollmentWorkflow],
        activities=[
            queued_webhook,
            records.update_record,
            store.record_step,
            store.finish_enrollment,
            store.read_timing,
        ],
        workflow_runner=workflow_runner(),
        activity_executor=ThreadPoolExecutor(max_workers=4),
    )
    async with worker:
        workflow_id = await enroll_one(app, "queued", "cy")
        result = await result_of(env, workflow_id)
        assert await replay_every_run(env, workflow_id) > 1
    assert turns["n"] == 26
    assert (result.status, result.steps) == ("completed", 2)
    assert steps(app, "queued") == [("notify", "200 OK"), ("done", "done = true")]


async def test_histories_recorded_before_continue_as_new_replay():
    """Recorded by histories/record_waits_history.py with the code before this change: a
    wait_for_event with events that do not match, then a delay with pause/resume signals."""
    saved = json.loads(
        (Path(__file__).parent / "histories" / "waits_before_continue_as_new.json").read_text()
    )
    history = WorkflowHistory.from_json(saved["workflow_id"], saved["history"])
    result = await replayer().replay_workflow(history)
    assert result.replay_failure is None


async def test_a_run_whose_input_predates_generations_records_the_patch_and_continues(
    app, env, new_worker, publish, short_histories, monkeypatch
):
    """An input written by a starter from before `generation` (0: an enrollment started just
    before an upgrade) still continues as new, by the patch it records."""
    monkeypatch.setattr(_starting, "GENERATION", 0)
    await publish(OPENED)
    services.set_record(app, "contact", "bo", {})
    async with new_worker():
        handle = await continued_by_unmatched_events(app, env, "bo")
        workflow_id = handle.id
        await handle.signal(EnrollmentWorkflow.unenroll, UnenrollSignal(reason="done"))
        result = await result_of(env, workflow_id)
        first, *continuing = [
            json.loads(json.dumps(h.to_json_dict())) for h in await runs(env, workflow_id)
        ]
    assert patch_events(first) == ["marker", "TemporalChangeVersion"]
    assert continuing and all(patch_events(h) == [] for h in continuing)  # started by this code
    for saved in (first, *continuing):
        replayed = await replayer().replay_workflow(WorkflowHistory.from_json(workflow_id, saved))
        assert replayed.replay_failure is None
    assert result.status == "unenrolled"


HISTORIES = Path(__file__).parent / "histories"


def with_generation(saved: dict[str, Any], generation: int) -> dict[str, Any]:
    """A saved history whose first event's input carries `generation`."""
    edited = copy.deepcopy(saved)
    started = edited["events"][0]["workflowExecutionStartedEventAttributes"]
    [payload] = started["input"]["payloads"]
    data = json.loads(base64.b64decode(payload["data"]))
    encoded = json.dumps({**data, "generation": generation}).encode()
    payload["data"] = base64.b64encode(encoded).decode()
    return edited


async def test_histories_recorded_with_the_continue_as_new_patch_replay():
    """Recorded by histories/record_waits_history.py with the code of commit 1c053c6, the last
    to record the patch in every new run; the same history with `generation` 1 in its
    input (an enrollment started by an upgraded starter but first run by a worker not upgraded
    yet, which ignored the field and recorded the patch) replays too."""
    saved = json.loads((HISTORIES / "waits_with_continue_as_new_patch.json").read_text())
    assert patch_events(saved["history"]) == ["marker", "TemporalChangeVersion"]
    for history in (saved["history"], with_generation(saved["history"], 1)):
        result = await replayer().replay_workflow(
            WorkflowHistory.from_json(saved["workflow_id"], history)
        )
        assert result.replay_failure is None

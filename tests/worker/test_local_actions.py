"""Actions whose effect is one store transaction run as local activities (runs of generation
>= 2): no activity task, no workflow task of their own. Older runs keep activity tasks, and
their histories replay; a store action that keeps failing is still recorded as failed after
its retries, and the enrollment goes on."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.common import RetryPolicy
from test_continue_as_new import HISTORIES, patch_events, replayer, with_generation
from test_delay_start import welcome_run
from test_enrollment_workflow import (
    WELCOME,
    WELCOME_LOCAL_ACTIVITIES,
    WELCOME_PATH,
    activity_tasks,
    history_json,
    local_activities,
    local_activity_events,
    markers,
    worker_with,
)

from crmflow import services
from crmflow.activities.models import ActionInput, ActionResult
from crmflow.activities.records import RecordActivities
from crmflow.definitions import WorkflowDefinition
from crmflow.enrolling import _starting
from crmflow.worker import _enrollment
from crmflow.worker._enrollment import STORE_ACTIONS_LOCAL, ActionRun


def summaries(saved: dict[str, Any]) -> list[str]:
    """The summaries of a history's local activity markers, in order."""
    return [
        json.loads(base64.b64decode(e["userMetadata"]["summary"]["data"]))
        for e in local_activity_events(saved)
    ]


async def test_store_actions_run_as_local_activities_that_read_like_the_definition(
    app, env, new_worker, publish
):
    result, history = await welcome_run(app, env, new_worker(), publish, "Ann")
    assert result.status == "completed"
    saved = history_json(history)
    assert local_activities(saved) == WELCOME_LOCAL_ACTIVITIES
    assert activity_tasks(saved) == ["send_email"]  # it may go out over SMTP: a task of its own
    actions = WorkflowDefinition.model_validate(WELCOME).action_map()
    assert summaries(saved) == [actions[a].summary() for a in ("qualify", "route", "bump", "call")]
    # One workflow task for qualify, route and scheduling welcome; one after it (the timer),
    # one after the timer (bump, call and the end).
    started = [e for e in saved["events"] if "workflowTaskStartedEventAttributes" in e]
    assert len(started) == 3
    assert (await replayer().replay_workflow(history)).replay_failure is None
    steps = services.list_enrollments(app, "welcome")[0]["steps"]
    assert [s["action_id"] for s in steps] == WELCOME_PATH
    assert services.show_record(app, "contact", "ann")["properties"]["touches"] == 1
    assert len(services.tasks(app)) == 1
    # The choice is recorded once (the STORE_ACTIONS_LOCAL patch: a marker and a
    # TemporalChangeVersion upsert), however many store actions the run has; no other patch.
    assert patch_events(saved, STORE_ACTIONS_LOCAL) == ["marker", "TemporalChangeVersion"]
    assert patch_events(saved) == []


async def test_a_generation_1_run_keeps_an_activity_task_per_action(
    app, env, new_worker, publish, monkeypatch
):
    """An enrollment started before the upgrade (its input says generation 1) runs its store
    actions as activity tasks, as the code it started under did."""
    monkeypatch.setattr(_starting, "GENERATION", 1)
    result, history = await welcome_run(app, env, new_worker(), publish, "Bo")
    assert result.status == "completed"
    saved = history_json(history)
    assert markers(saved) == []
    assert activity_tasks(saved) == [
        "update_record",
        "evaluate_branch",
        "send_email",
        "update_record",
        "create_task",
    ]
    assert (await replayer().replay_workflow(history)).replay_failure is None


async def test_a_history_recorded_with_generation_1_replays_as_it_ran():
    """Recorded by histories/record_main_history.py with commit 95acf01 (generation 1: every
    action an activity task). It replays; so does the same history with generation 2 in its
    input: a run started by an upgraded process but run by a worker not upgraded yet (which
    ran it as generation 1 and recorded no STORE_ACTIONS_LOCAL patch) keeps activity tasks
    when an upgraded worker takes it over, rather than failing to replay."""
    saved = json.loads((HISTORIES / "generation_1_enrollment.json").read_text())
    assert local_activities(saved["history"]) == ["record_step", "record_step"]  # bookkeeping
    assert "update_record" in activity_tasks(saved["history"])
    assert patch_events(saved["history"], STORE_ACTIONS_LOCAL) == []
    for history in (saved["history"], with_generation(saved["history"], 2)):
        replayed = await replayer().replay_workflow(
            WorkflowHistory.from_json(saved["workflow_id"], history)
        )
        assert replayed.replay_failure is None


async def test_a_store_action_that_keeps_failing_is_recorded_and_the_enrollment_goes_on(
    app, env, publish, monkeypatch
):
    """The local activity's retries are bounded by its policy (here 3 attempts; the real one
    bounds them by a day from the first attempt): then the step says why and the next action
    runs."""
    short = {
        "start_to_close_timeout": timedelta(seconds=5),
        "retry_policy": RetryPolicy(
            initial_interval=timedelta(milliseconds=100), maximum_attempts=3
        ),
    }
    monkeypatch.setitem(
        _enrollment.ACTIONS,
        "set_property",
        ActionRun(RecordActivities.update_record, short, local=True),
    )
    real = RecordActivities(app.sessions).update_record
    attempts = []

    def qualify_fails(input: ActionInput) -> ActionResult:
        if input.action.id != "qualify":
            return real(input)
        attempts.append(input.action.id)
        raise RuntimeError("database unreachable")

    worker = worker_with(env, app, update_record=qualify_fails)
    result, history = await welcome_run(app, env, worker, publish, "Cy")
    assert result.status == "completed"
    assert len(attempts) == 3
    steps = {s["action_id"]: s for s in services.list_enrollments(app, "welcome")[0]["steps"]}
    assert steps["qualify"]["outcome"] == "failed after retries: RuntimeError: database unreachable"
    assert set(steps) == set(WELCOME_PATH)
    assert services.show_record(app, "contact", "cy")["properties"]["touches"] == 1
    assert "lifecycle_stage" not in services.show_record(app, "contact", "cy")["properties"]
    # The failure is recorded by a local activity of its own (record_step), as before.
    first, *rest = WELCOME_LOCAL_ACTIVITIES
    assert local_activities(history_json(history)) == [first, "record_step", *rest]

"""Helpers shared by the outward action tests."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from crmflow import services
from crmflow.activities.custom import CustomActivities, HandlerRegistry
from crmflow.activities.enrollments import EnrollmentActivities
from crmflow.activities.messages import MessageActivities
from crmflow.activities.models import ActionInput, EnrollmentResult
from crmflow.activities.records import RecordActivities
from crmflow.activities.webhooks import WebhookActivities
from crmflow.activities.workflows import WorkflowActivities
from crmflow.enrolling import EnrollmentStarter
from crmflow.services import App
from crmflow.worker import EnrollmentWorkflow, workflow_runner


async def enroll_one(app: App, key: str, record_id: str) -> str:
    [outcome] = await services.enroll(app, key, [record_id])
    assert outcome.ok, outcome.message
    assert outcome.temporal_workflow_id
    return outcome.temporal_workflow_id


async def result_of(env: WorkflowEnvironment, workflow_id: str) -> EnrollmentResult:
    handle = env.client.get_workflow_handle(workflow_id, result_type=EnrollmentResult)
    async with env.time_skipping_unlocked():
        return await handle.result()


def steps_of(app: App, key: str, index: int = 0) -> dict[str, str]:
    enrollment = services.list_enrollments(app, key)[index]
    return {s["action_id"]: s["outcome"] for s in enrollment["steps"]}


class Crash:
    """Makes each outward activity die once at one point: "before_effect", "after_effect"
    (between the effect and its step row) or "after_complete" (the step is stored, Temporal
    never hears back)."""

    def __init__(self, point: str | None) -> None:
        self.point = point
        self.crashed: set[str] = set()

    def checkpoint(self, point: str, input: ActionInput) -> None:
        if point == self.point and input.action.id not in self.crashed:
            self.crashed.add(input.action.id)
            raise RuntimeError(f"worker died at {point} of {input.action.id}")

    def after_complete(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(real):

            async def run_async(input: ActionInput) -> Any:
                result = await real(input)
                self.checkpoint("after_complete", input)
                return result

            return activity.defn(name=name)(run_async)

        def run(input: ActionInput) -> Any:
            result = real(input)
            self.checkpoint("after_complete", input)
            return result

        return activity.defn(name=name)(run)


def crashing_worker(
    env: Any, app: Any, crash: Crash, *, smtp: Any = None, actions: str | None = None
) -> Worker:
    sessions = app.sessions
    records = RecordActivities(sessions)
    messages = MessageActivities(sessions, smtp=smtp, checkpoint=crash.checkpoint)
    enrollments = EnrollmentActivities(sessions)
    webhooks = WebhookActivities(sessions, allow_private=True, checkpoint=crash.checkpoint)
    workflows = WorkflowActivities(
        sessions, EnrollmentStarter(sessions, env.client, app.settings.task_queue)
    )
    custom = CustomActivities(sessions, HandlerRegistry(actions), checkpoint=crash.checkpoint)
    # create_record's effect and step commit together: only a crash before or after it exists.
    records_checked = _store_checkpoints(records.create_record, crash)
    return Worker(
        env.client,
        task_queue=app.settings.task_queue,
        workflows=[EnrollmentWorkflow],
        activities=[
            records.update_record,
            crash.after_complete("create_record", records_checked),
            crash.after_complete("send_email", messages.send_email),
            messages.create_task,
            crash.after_complete("call_webhook", webhooks.call_webhook),
            workflows.enroll_in_workflow,
            workflows.unenroll_from_workflow,
            crash.after_complete("run_custom_action", custom.run_custom_action),
            enrollments.evaluate_branch,
            enrollments.record_step,
            enrollments.finish_enrollment,
        ],
        activity_executor=ThreadPoolExecutor(4),
        workflow_runner=workflow_runner(),
    )


def _store_checkpoints(real: Callable[[ActionInput], Any], crash: Crash) -> Callable[..., Any]:
    def run(input: ActionInput) -> Any:
        crash.checkpoint("before_effect", input)
        result = real(input)
        crash.checkpoint("after_effect", input)
        return result

    return run

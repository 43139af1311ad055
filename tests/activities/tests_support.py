"""Helpers shared by the outward action tests."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from crmflow.activities.models import EnrollmentResult
from crmflow.starter import services
from crmflow.starter._app import App


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

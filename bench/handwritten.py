"""The hand-written workflows bench/enrollment_throughput.py measures the interpreter against."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from crmflow.activities.enrollments import EnrollmentActivities
    from crmflow.activities.messages import MessageActivities
    from crmflow.activities.models import ActionInput, EnrollmentInput
    from crmflow.activities.records import RecordActivities
    from crmflow.worker._policies import STORE_ACTION


async def five_steps(input: EnrollmentInput, store_step: Callable[..., Any]) -> None:
    """What a developer would write by hand for the bench's five steps, with the same
    activities; `store_step` runs the steps that only write the store (set_property, branch,
    create_task): as activity tasks or as local activities."""
    qualify, route, welcome, wait, call = input.definition.actions

    def request(action: Any) -> ActionInput:
        return ActionInput(context=input.context, action=action, at=workflow.now())

    await store_step(RecordActivities.update_record, request(qualify), **STORE_ACTION)
    chosen = await store_step(EnrollmentActivities.evaluate_branch, request(route), **STORE_ACTION)
    if chosen.next == "end":
        return
    await workflow.execute_activity_method(
        MessageActivities.send_email, request(welcome), **STORE_ACTION
    )
    await workflow.sleep(timedelta(seconds=1))
    await store_step(MessageActivities.create_task, request(call), **STORE_ACTION)


@workflow.defn(name="HandWritten")
class HandWrittenWorkflow:
    """Every step an activity task (the baseline the issue set)."""

    @workflow.run
    async def run(self, input: EnrollmentInput) -> None:
        await five_steps(input, workflow.execute_activity_method)


@workflow.defn(name="HandWrittenLocal")
class HandWrittenLocalWorkflow:
    """The store-only steps as local activities, as the interpreter runs them (runs of
    generation >= 2): the interpreter's own overhead on equal terms (`--against local`)."""

    @workflow.run
    async def run(self, input: EnrollmentInput) -> None:
        await five_steps(input, workflow.execute_local_activity_method)

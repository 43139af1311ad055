"""The hand-written workflow bench/enrollment_throughput.py measures the interpreter against."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from crmflow.activities.enrollments import EnrollmentActivities
    from crmflow.activities.messages import MessageActivities
    from crmflow.activities.models import ActionInput, EnrollmentInput
    from crmflow.activities.records import RecordActivities
    from crmflow.worker._policies import STORE_ACTION


@workflow.defn(name="HandWritten")
class HandWrittenWorkflow:
    """What a developer would write by hand for the same five steps, with the same activities."""

    @workflow.run
    async def run(self, input: EnrollmentInput) -> None:
        qualify, route, welcome, wait, call = input.definition.actions
        ctx = input.context
        await workflow.execute_activity_method(
            RecordActivities.update_record,
            ActionInput(context=ctx, action=qualify, at=workflow.now()),
            **STORE_ACTION,
        )
        chosen = await workflow.execute_activity_method(
            EnrollmentActivities.evaluate_branch,
            ActionInput(context=ctx, action=route, at=workflow.now()),
            **STORE_ACTION,
        )
        if chosen.next == "end":
            return
        await workflow.execute_activity_method(
            MessageActivities.send_email,
            ActionInput(context=ctx, action=welcome, at=workflow.now()),
            **STORE_ACTION,
        )
        await workflow.sleep(timedelta(seconds=1))
        await workflow.execute_activity_method(
            MessageActivities.create_task,
            ActionInput(context=ctx, action=call, at=workflow.now()),
            **STORE_ACTION,
        )

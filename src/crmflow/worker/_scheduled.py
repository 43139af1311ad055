"""A run of a scheduled workflow, started by its Temporal Schedule (or `schedule --run-now`)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from crmflow.activities.models import ScheduledRunInput, ScheduledRunResult
    from crmflow.activities.schedules import SchedulingActivities


@workflow.defn(name="ScheduledRun")
class ScheduledRunWorkflow:
    @workflow.run
    async def run(self, input: ScheduledRunInput) -> ScheduledRunResult:
        return await workflow.execute_activity_method(
            SchedulingActivities.run_schedule,
            input,
            summary=f"enroll the records matching '{input.workflow_key}' now",
            start_to_close_timeout=timedelta(hours=6),
            # Pages report progress: a worker that dies mid-run is noticed within a minute and
            # the retry resumes after the last page done.
            heartbeat_timeout=timedelta(minutes=1),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)),
        )

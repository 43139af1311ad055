"""The time sweep on Temporal: one Schedule for the deployment, `crmflow-time-sweep`, starting a
`TimeSweep` workflow every `interval` (default 30 s), whose one activity appends the changes
time alone made to the workflows' conditions to the change feed (`activities.time_sweep`).

A run still going when the next is due is skipped (overlap SKIP): the next run starts from the
watermark the last one left, so nothing is lost; runs missed while the server or every worker
was down are not replayed one by one either (catch-up window of one interval): one run catches
up on all of it, in bounded windows. The Schedule is created or updated by every worker as it
starts (`ensure_time_sweep_schedule`), idempotently.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import RetryPolicy
from temporalio.service import RPCError, RPCStatusCode

with workflow.unsafe.imports_passed_through():
    from crmflow.activities.models import TimeSweepInput, TimeSweepResult
    from crmflow.activities.time_sweep import SWEEP_INTERVAL, TimeSweepActivities

SCHEDULE_ID = "crmflow-time-sweep"
WORKFLOW_ID = "crmflow-time-sweep-run"


@workflow.defn(name="TimeSweep")
class TimeSweepWorkflow:
    @workflow.run
    async def run(self, input: TimeSweepInput) -> TimeSweepResult:
        return await workflow.execute_activity_method(
            TimeSweepActivities.sweep_time,
            input,
            summary="hand the conditions time changed to the dispatcher",
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=5),
        )


RUN_TIMEOUT = timedelta(minutes=10)


def time_sweep_schedule(*, task_queue: str, interval: timedelta = SWEEP_INTERVAL) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            TimeSweepWorkflow.run,
            TimeSweepInput(),
            id=WORKFLOW_ID,
            task_queue=task_queue,
            static_summary="time sweep: conditions that time alone turned",
            # A run takes well under a second; one that cannot run (no worker on its task queue
            # any more, after CRMFLOW_TASK_QUEUE changed) must not hold back every later run
            # (overlap SKIP): it ends, and the next run catches up from the watermarks.
            execution_timeout=RUN_TIMEOUT,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP,
            # Temporal's minimum; one late run catches up on everything from the watermark.
            catchup_window=max(interval, timedelta(seconds=10)),
        ),
        state=ScheduleState(note="crmflow's time sweep"),
    )


async def ensure_time_sweep_schedule(
    client: Client, *, task_queue: str, interval: timedelta = SWEEP_INTERVAL
) -> None:
    """Create the deployment's time sweep Schedule, or make it say what it should (interval and
    task queue), whichever worker calls this first."""
    wanted = time_sweep_schedule(task_queue=task_queue, interval=interval)
    handle = client.get_schedule_handle(SCHEDULE_ID)

    def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=wanted)

    try:
        await handle.update(replace)
        return
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    try:
        await client.create_schedule(SCHEDULE_ID, wanted)
    except ScheduleAlreadyRunningError:
        await handle.update(replace)  # another worker created it meanwhile

"""Temporal Schedules of scheduled workflows: one per workflow, created on activation, updated
on publish (effective for the very next run), paused on deactivation, unpaused on activation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from crmflow.activities.models import ScheduledRunInput, ScheduledRunResult
from crmflow.definitions import WorkflowDefinition
from crmflow.schedules import next_run_times, schedule_spec
from crmflow.store import ScheduledRunRepository, WorkflowRepository
from crmflow.worker import _search_attributes as sa
from crmflow.worker._scheduled import ScheduledRunWorkflow

from ._app import App
from .services import OperationFailed, UserError, load_version

# A run missed while the server was down still happens when it comes back within this window;
# older misses are dropped (a day-old "every morning" run is no longer what the user wanted).
CATCHUP_WINDOW = timedelta(hours=6)


def schedule_id(key: str) -> str:
    return f"crmflow-schedule:{key}"


def _schedule(definition: WorkflowDefinition, *, task_queue: str, paused: bool) -> Schedule:
    assert definition.enrollment.schedule is not None
    key = definition.key
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledRunWorkflow.run,
            ScheduledRunInput(workflow_key=key),
            id=f"crmflow-run:{key}",
            task_queue=task_queue,
            typed_search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.WORKFLOW_KEY, key),
                    SearchAttributePair(sa.OBJECT_TYPE, definition.object_type),
                ]
            ),
            static_summary=f"scheduled run of {definition.name}",
        ),
        spec=schedule_spec(definition.enrollment.schedule, timezone=definition.settings.timezone),
        # A run only starts enrollments: one still going when the next is due is skipped.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(
            paused=paused, note="workflow inactive" if paused else "workflow active"
        ),
    )


async def sync_schedule(app: App, key: str, *, active: bool) -> None:
    """Make the workflow's Temporal Schedule say what its latest version says: created if
    missing, replaced otherwise, paused unless active; deleted if the workflow is no longer a
    scheduled one."""
    definition, _ = load_version(app, key)
    client = await app.client()
    handle = client.get_schedule_handle(schedule_id(key))
    if definition.enrollment.trigger != "schedule":
        try:
            await handle.delete()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        return
    wanted = _schedule(definition, task_queue=app.settings.task_queue, paused=not active)

    def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=wanted)

    try:
        await handle.update(replace)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        await client.create_schedule(schedule_id(key), wanted)


async def schedule_state(client: Client, key: str) -> dict[str, Any] | None:
    """The Temporal Schedule's state, or None when there is none (never activated)."""
    try:
        description = await client.get_schedule_handle(schedule_id(key)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return {
        "id": schedule_id(key),
        "paused": description.schedule.state.paused,
        "next_runs": [t.isoformat() for t in description.info.next_action_times[:3]],
        "recent_runs": len(description.info.recent_actions),
    }


def next_runs(app: App, key: str, count: int, *, after: datetime | None = None) -> list[datetime]:
    definition, _ = load_version(app, key)
    schedule = definition.enrollment.schedule
    if schedule is None:
        raise UserError(f"workflow '{key}' is not a scheduled workflow")
    return next_run_times(
        schedule,
        timezone=definition.settings.timezone,
        after=after or datetime.now(UTC),
        count=count,
    )


async def run_now(app: App, key: str, *, wait: float = 60.0) -> ScheduledRunResult | None:
    """Start one run at once (not through the schedule, so it is not skipped by overlap) and
    wait, bounded, for its result (None if it is still going)."""
    definition, _ = load_version(app, key)
    if definition.enrollment.trigger != "schedule":
        raise UserError(f"workflow '{key}' is not a scheduled workflow")
    with app.sessions() as session:
        workflow = WorkflowRepository(session).require(key)
        if not workflow.active:
            raise OperationFailed(f"workflow '{key}' is not active: run `crmflow activate {key}`")
    client = await app.client()
    handle = await client.start_workflow(
        ScheduledRunWorkflow.run,
        ScheduledRunInput(workflow_key=key, trigger="manual"),
        id=f"crmflow-run:{key}-now-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}",
        task_queue=app.settings.task_queue,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.WORKFLOW_KEY, key),
                SearchAttributePair(sa.OBJECT_TYPE, definition.object_type),
            ]
        ),
        static_summary=f"run of {definition.name}, started by hand",
    )
    try:
        return await asyncio.wait_for(handle.result(), timeout=wait)
    except TimeoutError:
        return None


def recent_runs(app: App, key: str, *, limit: int = 5) -> list[dict[str, Any]]:
    with app.sessions() as session:
        return [
            {
                "started_at": run.started_at.isoformat(timespec="seconds"),
                "finished_at": run.finished_at.isoformat(timespec="seconds")
                if run.finished_at
                else None,
                "trigger": run.trigger,
                "status": run.status,
                "version": run.version,
                "matched": run.matched,
                "enrolled": run.enrolled,
                "skipped": run.skipped,
                "failed": run.failed,
            }
            for run in ScheduledRunRepository(session).for_workflow(key, limit=limit)
        ]

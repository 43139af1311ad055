"""Temporal Schedules of scheduled workflows: one per workflow, created on activation, updated
on publish (effective for the very next run), paused on deactivation, unpaused on activation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowFailureError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from crmflow.activities.models import ScheduledRunInput, ScheduledRunResult
from crmflow.definitions import WorkflowDefinition
from crmflow.schedules import describe_schedule, next_run_times, schedule_spec
from crmflow.store import ScheduledRunRepository, WorkflowRepository
from crmflow.worker import ScheduledRunWorkflow
from crmflow.worker import search_attributes as sa

from ._app import App
from ._base import OperationFailed, UserError, load_version

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
    try:
        definition, _ = load_version(app, key)
    except UserError:
        if active:
            raise
        # Deactivating a workflow whose latest version no longer loads (stored before a rule
        # that now refuses it): its schedule cannot be rebuilt, but it can stop.
        await pause_schedule(app, key)
        return
    if definition.enrollment.trigger != "schedule":
        await delete_schedule(app, key)
        return
    client = await app.client()
    handle = client.get_schedule_handle(schedule_id(key))
    wanted = _schedule(definition, task_queue=app.settings.task_queue, paused=not active)

    def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=wanted)

    try:
        await handle.update(replace)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        await client.create_schedule(schedule_id(key), wanted)


async def pause_schedule(app: App, key: str) -> None:
    """Pause the workflow's Temporal Schedule, if it has one."""
    client = await app.client()
    try:
        await client.get_schedule_handle(schedule_id(key)).pause(note="workflow inactive")
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


async def delete_schedule(app: App, key: str) -> None:
    """Delete the workflow's Temporal Schedule, if it has one."""
    client = await app.client()
    try:
        await client.get_schedule_handle(schedule_id(key)).delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


@dataclass(frozen=True)
class ScheduleStatus:
    """What Temporal says of a workflow's Schedule."""

    paused: bool
    note: str
    next_runs: list[datetime]  # as Temporal computes them (UTC), also while paused
    recent_runs: int


# A listing must not hang on a Temporal that does not answer: past this, its state is unknown.
STATE_TIMEOUT = timedelta(seconds=5)
UNREACHABLE = "Temporal unreachable"


async def schedule_state(client: Client, key: str) -> ScheduleStatus | None:
    """The Temporal Schedule's state, or None when there is none (never activated)."""
    try:
        description = await client.get_schedule_handle(schedule_id(key)).describe(
            rpc_timeout=STATE_TIMEOUT
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return ScheduleStatus(
        paused=description.schedule.state.paused,
        note=description.schedule.state.note or "",
        next_runs=list(description.info.next_action_times),
        recent_runs=len(description.info.recent_actions),
    )


async def _statuses(
    app: App, keys: Sequence[str]
) -> tuple[dict[str, ScheduleStatus | None], str | None]:
    """Each workflow's Temporal Schedule, or why none could be read (the listings that show them
    work offline: an unreachable Temporal makes the state unknown, it does not fail them)."""
    try:
        client = await asyncio.wait_for(app.client(), STATE_TIMEOUT.total_seconds())
    except (OperationFailed, RuntimeError, TimeoutError):
        # OperationFailed from the CLI's App, RuntimeError from the SDK's failed connect.
        return {}, UNREACHABLE
    gate = asyncio.Semaphore(16)

    async def one(key: str) -> ScheduleStatus | None:
        async with gate:
            return await schedule_state(client, key)

    try:
        found = await asyncio.gather(*(one(key) for key in keys))
    except RPCError as exc:
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return {}, UNREACHABLE
        return {}, f"Temporal refused: {exc.message}"
    return dict(zip(keys, found, strict=True)), None


async def schedule_views(
    app: App, workflows: Sequence[tuple[str, WorkflowDefinition]]
) -> dict[str, dict[str, Any]]:
    """For each scheduled workflow among (key, latest definition): its schedule in words, the
    state of its Temporal Schedule and its last run, as `workflows` and `show` print them.

    `state` is `active`, `paused`, `missing` (no Temporal Schedule: never activated) or
    `unknown` (with `state_error`); `paused` is None unless known. `next_runs` are the run
    times Temporal has planned, in the workflow's time zone: none while paused."""
    scheduled = [(key, d) for key, d in workflows if d.enrollment.schedule is not None]
    if not scheduled:
        return {}  # nothing to ask Temporal: the listing stays offline
    statuses, error = await _statuses(app, [key for key, _ in scheduled])
    views = {}
    for key, definition in scheduled:
        assert definition.enrollment.schedule is not None
        timezone = definition.settings.timezone
        status = statuses.get(key)
        if error is not None:
            state, paused, upcoming = "unknown", None, None
        elif status is None:
            state, paused, upcoming = "missing", None, []
        else:
            zone = ZoneInfo(timezone)
            state, paused = ("paused" if status.paused else "active"), status.paused
            upcoming = [] if status.paused else [t.astimezone(zone) for t in status.next_runs[:3]]
        last = recent_runs(app, key, limit=1)
        views[key] = {
            "id": schedule_id(key),
            "description": describe_schedule(definition.enrollment.schedule, timezone=timezone),
            "timezone": timezone,
            "state": state,
            "state_error": error,
            "paused": paused,
            "next_runs": None if upcoming is None else [t.isoformat() for t in upcoming],
            "last_run": last[0] if last else None,
        }
    return views


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
    except WorkflowFailureError as exc:
        # A one-line reason (the innermost cause: terminated, timed out, the activity's error)
        # rather than the SDK's error, which the CLI would call unexpected.
        cause: BaseException = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        reason = cause.message if isinstance(cause, FailureError) else str(cause)
        raise OperationFailed(f"the run of '{key}' failed: {reason}") from exc


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

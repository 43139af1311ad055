"""Activating, deactivating and removing a workflow."""

from __future__ import annotations

from dataclasses import dataclass

from crmflow.definitions import ACTIVE_STATUSES
from crmflow.store import ChangeRepository, EnrollmentRepository, StoreError, WorkflowRepository

from ._app import App
from ._base import (
    UserError,
    _signal,
    checked_key,
    load_version,
    utcnow,
)
from .review import ExistingEnrollment, Progress
from .review import enroll_existing as enroll_matching
from .schedules import delete_schedule, sync_schedule


@dataclass(frozen=True)
class ActivationResult:
    key: str
    active: bool
    resumed: int = 0
    paused: int = 0
    unenrolled: int = 0
    existing: ExistingEnrollment | None = None  # with enroll_existing


async def activate(
    app: App, key: str, *, enroll_existing: bool = False, on_progress: Progress | None = None
) -> ActivationResult:
    """Activate (or keep active), resume paused enrollments; with `enroll_existing` (or the
    definition's `enrollment.enroll_existing`) also enroll the records that match now."""
    # _review and _schedules build on this module

    definition, version = load_version(app, key)
    trigger = definition.enrollment.trigger
    enroll_existing = enroll_existing or definition.enrollment.enroll_existing
    if enroll_existing and trigger != "criteria":
        raise UserError(
            f"--enroll-existing is for criteria workflows; '{key}' is {trigger}: "
            f"enroll records with `crmflow enroll {key} ID...`"
        )
    with app.sessions() as session:
        paused = EnrollmentRepository(session).find(key, statuses=["paused"], limit=1)
        if enroll_existing or paused or trigger == "schedule":
            # Reach Temporal before changing anything, so a failure changes nothing.
            await app.client()
    with app.sessions.begin() as session:
        workflows = WorkflowRepository(session)
        if not workflows.require(key, for_update=True).active:
            workflow = workflows.set_active(key, True, now=utcnow())
            # Automatic enrollment reacts to the changes from now on; records that match
            # already enroll only with enroll_existing. Activating an active workflow keeps
            # this point: moving it on would drop the changes still waiting for the dispatcher.
            workflow.activated_change_id = ChangeRepository(session).last_id()
        resumed = EnrollmentRepository(session).set_status_for_workflow(
            key, from_status="paused", to_status="running"
        )
    await _signal(
        app,
        resumed,
        lambda s, ids: s.resume(ids),
        key=key,
        retry=f"crmflow deactivate {key} && crmflow activate {key}",
    )
    if trigger == "schedule":
        await sync_schedule(app, key, active=True)
    # Only now, with the workflow active: a record that comes to match from here on is
    # enrolled by the dispatcher or below, and the store refuses the second of the two.
    existing = (
        await enroll_matching(app, definition, version, on_progress=on_progress)
        if enroll_existing
        else None
    )
    return ActivationResult(key, True, resumed=len(resumed), existing=existing)


async def deactivate(app: App, key: str, *, unenroll_all: bool = False) -> ActivationResult:

    # The stored trigger, not the definition: a broken version can still be deactivated.
    with app.sessions() as session:
        try:
            scheduled = WorkflowRepository(session).version(key).trigger == "schedule"
        except StoreError as exc:
            raise UserError(str(exc)) from None
    with app.sessions() as session:
        if scheduled or EnrollmentRepository(session).find(
            key, statuses=list(ACTIVE_STATUSES), limit=1
        ):
            await app.client()
    with app.sessions.begin() as session:
        WorkflowRepository(session).set_active(key, False, now=utcnow())
        enrollments = EnrollmentRepository(session)
        if unenroll_all:
            targets = enrollments.find(key, statuses=list(ACTIVE_STATUSES))
        else:
            targets = enrollments.set_status_for_workflow(
                key, from_status="running", to_status="paused"
            )
    if scheduled:
        await sync_schedule(app, key, active=False)  # paused: no run while inactive
    if unenroll_all:
        reason = "workflow deactivated with --unenroll-all"
        done = await _signal(
            app,
            targets,
            lambda s, ids: s.unenroll(ids, reason),
            key=key,
            retry=f"crmflow deactivate {key} --unenroll-all",
        )
        return ActivationResult(key, False, unenrolled=done)
    await _signal(
        app,
        targets,
        lambda s, ids: s.pause(ids),
        key=key,
        retry=f"crmflow activate {key} && crmflow deactivate {key}",
    )
    return ActivationResult(key, False, paused=len(targets))


async def remove(app: App, key: str) -> int:
    """Delete an inactive workflow with no running or paused enrollment: its Temporal Schedule
    first (so a failure there changes nothing), then its versions, enrollments and runs.
    Returns how many enrollments were deleted with it."""

    checked_key(key)
    with app.sessions() as session:
        workflows = WorkflowRepository(session)
        try:
            workflow = workflows.require(key)
        except StoreError as exc:
            raise UserError(str(exc)) from None
        if workflow.active:
            raise UserError(f"workflow '{key}' is active: run `crmflow deactivate {key}` first")
        enrollments = EnrollmentRepository(session)
        if enrollments.find(key, statuses=list(ACTIVE_STATUSES), limit=1):
            raise UserError(
                f"workflow '{key}' has enrollments still paused: "
                f"run `crmflow deactivate {key} --unenroll-all` first"
            )
        scheduled = any(v.trigger == "schedule" for v in workflows.versions(key))
        count = sum(enrollments.count_by_status(key).values())
    if scheduled:
        await delete_schedule(app, key)
    with app.sessions.begin() as session:
        WorkflowRepository(session).remove(key)
    return count

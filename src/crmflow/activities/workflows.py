"""Workflow-to-workflow actions: `enroll_in_workflow` and `unenroll_from_workflow`."""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from crmflow.definitions import (
    EnrollInWorkflowAction,
    UnenrollFromWorkflowAction,
    WorkflowDefinition,
)
from crmflow.store import BrokenVersion, EnrollmentRepository, WorkflowRepository

from ._once import run_outward
from .models import ActionInput, ActionResult
from .ports import Enroller


class WorkflowActivities:
    def __init__(self, sessions: sessionmaker[Session], starter: Enroller) -> None:
        self.sessions = sessions
        self.starter = starter

    @activity.defn(name="enroll_in_workflow")
    async def enroll_in_workflow(self, input: ActionInput) -> ActionResult:
        action = input.action
        if not isinstance(action, EnrollInWorkflowAction):
            raise TypeError(f"enroll_in_workflow cannot run a {action.type} action")
        return await run_outward(self.sessions, input, lambda: self._enroll(input, action))

    def _target(
        self, input: ActionInput, key: str
    ) -> tuple[WorkflowDefinition, int] | ActionResult:
        with self.sessions() as session:
            workflows = WorkflowRepository(session)
            workflow = workflows.get(key)
            if workflow is None:
                return ActionResult(outcome=f"failed: no workflow '{key}'", failed=True)
            if not workflow.active:
                return ActionResult(outcome=f"failed: workflow '{key}' is not active", failed=True)
            version = workflows.version(key)
            try:
                definition = workflows.definition(key, version.version)
            except BrokenVersion as exc:
                return ActionResult(outcome=f"failed: {exc}", failed=True)
        if definition.object_type != input.context.object_type:
            return ActionResult(
                outcome=f"failed: workflow '{key}' enrolls {definition.object_type} records, "
                f"not {input.context.object_type}",
                failed=True,
            )
        return definition, version.version

    async def _enroll(self, input: ActionInput, action: EnrollInWorkflowAction) -> ActionResult:
        ctx, key = input.context, action.workflow
        target = await asyncio.to_thread(self._target, input, key)
        if isinstance(target, ActionResult):
            return target
        definition, version = target
        # The origin makes the start idempotent: a retry finds the enrollment this step made
        # (even one that has ended since) instead of making a second.
        outcome = await self.starter.start(
            definition,
            version,
            ctx.record_id,
            source="workflow",
            origin=f"{ctx.enrollment_id}:{action.id}",
        )
        if outcome.ok:
            return ActionResult(
                outcome=f"enrolled in '{key}'",
                detail={"temporal_workflow_id": outcome.temporal_workflow_id},
            )
        return ActionResult(outcome=f"not enrolled in '{key}': {outcome.message}")

    @activity.defn(name="unenroll_from_workflow")
    async def unenroll_from_workflow(self, input: ActionInput) -> ActionResult:
        action = input.action
        if not isinstance(action, UnenrollFromWorkflowAction):
            raise TypeError(f"unenroll_from_workflow cannot run a {action.type} action")
        return await run_outward(self.sessions, input, lambda: self._unenroll(input, action))

    async def _unenroll(
        self, input: ActionInput, action: UnenrollFromWorkflowAction
    ) -> ActionResult:
        ctx = input.context

        def running() -> dict[str, str]:
            with self.sessions() as session:
                enrollments = EnrollmentRepository(session)
                return {
                    key: e.temporal_workflow_id
                    for key in action.workflows
                    if (e := enrollments.active_for(key, ctx.object_type, ctx.record_id))
                }

        targets = await asyncio.to_thread(running)
        # A refused signal raises (SignalFailed): the activity is retried and no step is
        # stored. Signalling twice (a retry) is harmless: an enrollment records the first
        # unenrollment; a target not started yet is started with the unenrollment queued.
        await self.starter.unenroll(targets.values(), f"unenrolled by '{ctx.workflow_key}'")
        if targets:
            outcome = f"unenrolled from {', '.join(sorted(targets))}"
        else:
            outcome = f"not enrolled in {', '.join(action.workflows)}: nothing to do"
        return ActionResult(outcome=outcome, detail={"workflows": list(targets)})

"""Starting enrollments and signalling them: shared by manual enrollment (the CLI) and automatic
enrollment (the dispatcher)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from crmflow.activities.models import (
    EnrollmentContext,
    EnrollmentInput,
    GoalMetSignal,
    UnenrollSignal,
)
from crmflow.conditions import RecordSnapshot, evaluate
from crmflow.definitions import WorkflowDefinition
from crmflow.store import ENDED_STATUSES, AlreadyEnrolled, EnrollmentRepository, load_snapshot
from crmflow.worker import _search_attributes as sa
from crmflow.worker._enrollment import EnrollmentWorkflow

SIGNAL_CONCURRENCY = 50


@dataclass(frozen=True)
class EnrollOutcome:
    """What happened to one record of an enroll or unenroll request."""

    record_id: str
    ok: bool
    message: str
    temporal_workflow_id: str | None = None


def enrollment_search_attributes(ctx: EnrollmentContext) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.WORKFLOW_KEY, ctx.workflow_key),
            SearchAttributePair(sa.VERSION, ctx.version),
            SearchAttributePair(sa.RECORD_ID, ctx.record_id),
            SearchAttributePair(sa.OBJECT_TYPE, ctx.object_type),
            SearchAttributePair(sa.STATUS, "running"),
        ]
    )


def refusal(
    definition: WorkflowDefinition, snapshot: RecordSnapshot, *, now: datetime
) -> str | None:
    """Why the record may not enroll at all (whatever the trigger), or None."""
    suppressed = sorted(snapshot.lists & set(definition.settings.suppression_lists))
    if suppressed:
        return f"suppressed: member of {', '.join(suppressed)}"
    if definition.goal is not None and evaluate(definition.goal.criteria, snapshot, now=now):
        return "goal already met"
    return None


class EnrollmentStarter:
    def __init__(self, sessions: sessionmaker[Session], client: Client, task_queue: str) -> None:
        self.sessions = sessions
        self.client = client
        self.task_queue = task_queue

    async def start(
        self,
        definition: WorkflowDefinition,
        version: int,
        record_id: str,
        *,
        source: str,
        trigger_change_id: int | None = None,
        origin: str | None = None,
        snapshot: RecordSnapshot | None = None,
    ) -> EnrollOutcome:
        """Create the enrollment row, then its Temporal workflow. Idempotent for a trigger
        change: dispatching the same change again finds its enrollment and (re)starts the same
        workflow id, which Temporal refuses to run twice. Idempotent likewise for an `origin`
        (the enroll_in_workflow step that asks for the enrollment). `snapshot`: the record as
        the caller just read it (with the events the workflow's goal reads), saving a read."""
        key, object_type = definition.key, definition.object_type
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            enrollments = EnrollmentRepository(session)
            enrollment = (
                enrollments.by_trigger(key, trigger_change_id)
                if trigger_change_id is not None
                else enrollments.by_origin(key, origin)
                if origin is not None
                else None
            )
            redo = enrollment is not None
            if enrollment is not None and enrollment.status in ENDED_STATUSES:
                return EnrollOutcome(
                    record_id, True, "enrolled (already done)", enrollment.temporal_workflow_id
                )
            if enrollment is None:
                if snapshot is None:
                    snapshot = load_snapshot(session, object_type, record_id)
                if snapshot is None:
                    return EnrollOutcome(
                        record_id, False, f"no {object_type} with id '{record_id}'"
                    )
                refused = refusal(definition, snapshot, now=now)
                if refused:
                    return EnrollOutcome(record_id, False, refused)
                try:
                    enrollment = enrollments.create(
                        key=key,
                        version=version,
                        object_type=object_type,
                        record_id=record_id,
                        source=source,
                        now=now,
                        trigger_change_id=trigger_change_id,
                        origin=origin,
                    )
                except AlreadyEnrolled as exc:
                    return EnrollOutcome(record_id, False, str(exc))
            others = [
                e
                for other in definition.settings.unenroll_from
                if (e := enrollments.active_for(other, object_type, record_id)) is not None
            ]
        ctx = EnrollmentContext(
            enrollment_id=enrollment.id,
            workflow_key=key,
            workflow_name=definition.name,
            version=version,
            object_type=object_type,
            record_id=record_id,
        )
        try:
            await self.client.start_workflow(
                EnrollmentWorkflow.run,
                EnrollmentInput(context=ctx, definition=definition),
                id=enrollment.temporal_workflow_id,
                task_queue=self.task_queue,
                search_attributes=enrollment_search_attributes(ctx),
                static_summary=f"{definition.name} (v{version}) for {object_type} {record_id}",
            )
        except WorkflowAlreadyStartedError:
            # A redo of a dispatch that crashed after starting: the run is there, keep it.
            if not redo:
                self._failed(enrollment.id, "its workflow id is already taken")
                raise
        except Exception as exc:
            # A dispatched change is retried (its row is reused); any other enrollment would
            # otherwise look running forever with no workflow behind it.
            if trigger_change_id is None and origin is None:
                self._failed(enrollment.id, f"could not start: {exc}")
            raise
        await self.unenroll([e.temporal_workflow_id for e in others], f"enrolled in '{key}'")
        return EnrollOutcome(record_id, True, "enrolled", enrollment.temporal_workflow_id)

    def _failed(self, enrollment_id: int, reason: str) -> None:
        with self.sessions.begin() as session:
            EnrollmentRepository(session).set_status(
                enrollment_id, "failed", reason=reason, ended_at=datetime.now(UTC)
            )

    async def signal_all(
        self, workflow_ids: Iterable[str], send: Callable[[WorkflowHandle[Any, Any]], Any]
    ) -> int:
        """Signal enrollments concurrently (bounded); a closed or unknown run is skipped."""
        gate = asyncio.Semaphore(SIGNAL_CONCURRENCY)
        delivered = 0

        async def one(workflow_id: str) -> None:
            nonlocal delivered
            async with gate:
                try:
                    await send(self.client.get_workflow_handle(workflow_id))
                    delivered += 1
                except RPCError:
                    pass

        await asyncio.gather(*(one(i) for i in workflow_ids))
        return delivered

    async def unenroll(self, workflow_ids: Iterable[str], reason: str) -> int:
        signal = UnenrollSignal(reason=reason)
        return await self.signal_all(
            workflow_ids, lambda h: h.signal(EnrollmentWorkflow.unenroll, signal)
        )

    async def goal_met(self, workflow_ids: Iterable[str], detail: str) -> int:
        signal = GoalMetSignal(detail=detail)
        return await self.signal_all(
            workflow_ids, lambda h: h.signal(EnrollmentWorkflow.goal_met, signal)
        )

"""Starting enrollments and signalling them: shared by manual enrollment (the CLI) and automatic
enrollment (the dispatcher)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from crmflow.activities.models import (
    EnrollmentContext,
    EnrollmentInput,
    EventSignal,
    GoalMetSignal,
    UnenrollSignal,
)
from crmflow.conditions import RecordSnapshot, evaluate
from crmflow.definitions import WorkflowDefinition, condition_reads
from crmflow.store import (
    ENDED_STATUSES,
    AlreadyEnrolled,
    Enrollment,
    EnrollmentRepository,
    load_snapshot,
    load_snapshots,
)
from crmflow.worker import _search_attributes as sa
from crmflow.worker._enrollment import EnrollmentWorkflow

SIGNAL_CONCURRENCY = 50


@dataclass(frozen=True)
class Ready:
    """An enrollment row committed, its workflow not started yet."""

    input: EnrollmentInput
    temporal_workflow_id: str
    unenroll_from: list[str]  # workflow ids of the record's enrollments to end on start
    # The row was found running: its workflow is most likely running too (then the record is
    # skipped), unless whoever created the row died before starting it (then it starts now).
    recover: bool = False


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
                e.temporal_workflow_id
                for other in definition.settings.unenroll_from
                if (e := enrollments.active_for(other, object_type, record_id)) is not None
            ]
            ready = self._ready(definition, version, enrollment, others)
        retried = trigger_change_id is not None or origin is not None
        return await self.launch(ready, redo=redo, retried_by_caller=retried)

    def prepare_page(
        self,
        definition: WorkflowDefinition,
        version: int,
        record_ids: Sequence[str],
        *,
        source: str,
    ) -> list[Ready | EnrollOutcome]:
        """The store half of `start` for a page of records (a scheduled run's or
        `--enroll-existing`'s), in one transaction and a handful of statements whatever the
        page's size: each record's enrollment row ready to `launch`, or why it has none."""
        key, object_type = definition.key, definition.object_type
        now = datetime.now(UTC)
        goal_events = condition_reads(definition.goal.criteria).events if definition.goal else ()
        outcomes: dict[str, Ready | EnrollOutcome] = {}
        with self.sessions.begin() as session:
            enrollments = EnrollmentRepository(session)
            active = enrollments.active_among(key, object_type, record_ids)
            snapshots = load_snapshots(
                session,
                object_type,
                [i for i in record_ids if i not in active],
                event_names=goal_events,
            )
            candidates = []
            for record_id in record_ids:
                snapshot = snapshots.get(record_id)
                if record_id in active:
                    outcomes[record_id] = replace(
                        self._ready(definition, version, active[record_id], []), recover=True
                    )
                    continue
                if snapshot is None:
                    refused: str | None = f"no {object_type} with id '{record_id}'"
                else:
                    refused = refusal(definition, snapshot, now=now)
                if refused:
                    outcomes[record_id] = EnrollOutcome(record_id, False, refused)
                else:
                    candidates.append(record_id)
            row: dict[str, Any] = {
                "key": key,
                "version": version,
                "object_type": object_type,
                "source": source,
            }
            try:
                created = enrollments.create_many(**row, record_ids=candidates, now=now)
            except AlreadyEnrolled:
                # A record of the page was enrolled meanwhile (by the dispatcher, say): one at
                # a time, so that only that record is refused.
                created = []
                for record_id in candidates:
                    try:
                        created.append(enrollments.create(**row, record_id=record_id, now=now))
                    except AlreadyEnrolled as exc:
                        outcomes[record_id] = EnrollOutcome(record_id, False, str(exc))
            created_ids = [e.record_id for e in created]
            others: dict[str, list[str]] = {record_id: [] for record_id in created_ids}
            for other in definition.settings.unenroll_from:
                for record_id, e in enrollments.active_among(
                    other, object_type, created_ids
                ).items():
                    others[record_id].append(e.temporal_workflow_id)
            for e in created:
                outcomes[e.record_id] = self._ready(definition, version, e, others[e.record_id])
        return [outcomes[record_id] for record_id in record_ids]

    def _ready(
        self,
        definition: WorkflowDefinition,
        version: int,
        enrollment: Enrollment,
        others: list[str],
    ) -> Ready:
        return Ready(
            input=EnrollmentInput(
                context=EnrollmentContext(
                    enrollment_id=enrollment.id,
                    workflow_key=definition.key,
                    workflow_name=definition.name,
                    version=version,
                    object_type=definition.object_type,
                    record_id=enrollment.record_id,
                ),
                definition=definition,
            ),
            temporal_workflow_id=enrollment.temporal_workflow_id,
            unenroll_from=others,
        )

    async def launch(
        self, ready: Ready, *, redo: bool = False, retried_by_caller: bool = False
    ) -> EnrollOutcome:
        """The Temporal half of `start`: start the enrollment's workflow, then unenroll the
        record from the workflows its `unenroll_from` names. `redo`: the row is a dispatch's
        that may have started already; `retried_by_caller`: a failure is retried with the same
        row (a dispatched change), so the row must not be marked failed."""
        ctx, definition = ready.input.context, ready.input.definition
        start = self.client.start_workflow(
            EnrollmentWorkflow.run,
            ready.input,
            id=ready.temporal_workflow_id,
            task_queue=self.task_queue,
            search_attributes=enrollment_search_attributes(ctx),
            static_summary=(
                f"{definition.name} (v{ctx.version}) for {ctx.object_type} {ctx.record_id}"
            ),
            # Never a second run of an enrollment that ran already.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE
            if ready.recover
            else WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
        if ready.recover:
            try:
                await start
            except WorkflowAlreadyStartedError:
                already = AlreadyEnrolled(definition.key, ctx.object_type, ctx.record_id)
                return EnrollOutcome(ctx.record_id, False, str(already))
            lost = "enrolled (its start had been lost)"
            return EnrollOutcome(ctx.record_id, True, lost, ready.temporal_workflow_id)
        try:
            await start
        except WorkflowAlreadyStartedError:
            # A redo of a dispatch that crashed after starting: the run is there, keep it.
            if not redo:
                self._failed(ctx.enrollment_id, "its workflow id is already taken")
                raise
        except Exception as exc:
            # A dispatched change is retried (its row is reused); any other enrollment would
            # otherwise look running forever with no workflow behind it.
            if not retried_by_caller:
                self._failed(ctx.enrollment_id, f"could not start: {exc}")
            raise
        await self.unenroll(ready.unenroll_from, f"enrolled in '{definition.key}'")
        return EnrollOutcome(ctx.record_id, True, "enrolled", ready.temporal_workflow_id)

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

    async def event_tracked(self, workflow_ids: Iterable[str], signal: EventSignal) -> int:
        return await self.signal_all(
            workflow_ids, lambda h: h.signal(EnrollmentWorkflow.event_tracked, signal)
        )

    async def goal_met(self, workflow_ids: Iterable[str], detail: str) -> int:
        signal = GoalMetSignal(detail=detail)
        return await self.signal_all(
            workflow_ids, lambda h: h.signal(EnrollmentWorkflow.goal_met, signal)
        )

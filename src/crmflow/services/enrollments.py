"""Manual enrollment, unenrollment, and reading enrollments, history, outbox and tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from temporalio.service import RPCError

from crmflow.activities.ports import EnrollOutcome
from crmflow.definitions import (
    ACTIVE_STATUSES,
    check_record_id,
)
from crmflow.enrolling import SignalFailed
from crmflow.store import (
    Enrollment,
    EnrollmentRepository,
    EnrollmentStep,
    OutboxRepository,
    StoreError,
    TaskRepository,
    WorkflowRepository,
)

from ._app import App
from ._base import (
    OperationFailed,
    UserError,
    checked,
    checked_key,
    load_version,
    starter,
)
from .views import EnrollmentView, HistoryView, OutboxView, StepView, TaskView
from .whynot import explain_record

# ---------------------------------------------------------------- enrollments


async def enroll(app: App, key: str, record_ids: Sequence[str]) -> list[EnrollOutcome]:
    checked_key(key)
    for record_id in record_ids:
        checked(check_record_id, record_id)
    with app.sessions() as session:
        workflow = WorkflowRepository(session).get(key)
        if workflow is None:
            raise UserError(f"no workflow '{key}'")
        if not workflow.active:
            raise OperationFailed(
                f"workflow '{key}' is not active: run `crmflow activate {key}` first"
            )
    definition, version = load_version(app, key)
    enrolling = await starter(app)
    outcomes = []
    for record_id in record_ids:
        try:
            outcome = await enrolling.start(definition, version, record_id, source="manual")
        except RPCError as exc:
            raise OperationFailed(
                f"could not start the enrollment of '{record_id}': {exc}"
            ) from exc
        outcomes.append(outcome)
    return outcomes


async def unenroll(
    app: App,
    key: str,
    record_ids: Sequence[str],
    *,
    reason: str = "unenrolled manually",
    wait: float = 10.0,
) -> list[EnrollOutcome]:
    """Signal each running enrollment; wait (bounded) until the workflow has recorded it."""
    checked_key(key)
    for record_id in record_ids:
        checked(check_record_id, record_id)
    with app.sessions() as session:
        try:
            object_type = WorkflowRepository(session).version(key).object_type
        except StoreError as exc:
            raise UserError(str(exc)) from None
        enrollments = EnrollmentRepository(session)
        targets = {
            record_id: enrollments.active_for(key, object_type, record_id)
            for record_id in record_ids
        }
    signals = await starter(app)
    outcomes = []
    for record_id, enrollment in targets.items():
        if enrollment is None:
            outcomes.append(
                EnrollOutcome(record_id, False, f"'{record_id}' is not enrolled in '{key}'")
            )
            continue
        try:
            await signals.unenroll([enrollment.temporal_workflow_id], reason)
        except SignalFailed as exc:
            outcomes.append(EnrollOutcome(record_id, False, f"could not signal: {exc}"))
            continue
        status = await _wait_for_end(app, enrollment.id, wait)
        if status is None:
            # The signal is delivered and durable: it takes effect as soon as a worker runs.
            ok, message = True, "unenroll requested: it takes effect when a worker runs"
        else:
            ok = status == "unenrolled"
            message = "unenrolled" if ok else f"had already ended as {status}"
        outcomes.append(EnrollOutcome(record_id, ok, message, enrollment.temporal_workflow_id))
    return outcomes


async def _wait_for_end(app: App, enrollment_id: int, timeout: float) -> str | None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with app.sessions() as session:
            found = EnrollmentRepository(session).get(enrollment_id)
            if found is not None and found.status not in ACTIVE_STATUSES:
                return found.status
        if asyncio.get_running_loop().time() >= deadline:
            return None
        await asyncio.sleep(0.1)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def step_view(step: EnrollmentStep) -> StepView:
    return StepView(
        **{
            "action_id": step.action_id,
            "type": step.type,
            "started_at": _iso(step.started_at),
            "finished_at": _iso(step.finished_at),
            "outcome": step.outcome,
        }
    )


def enrollment_view(enrollment: Enrollment, steps: list[EnrollmentStep]) -> EnrollmentView:
    return EnrollmentView(
        **{
            "workflow": enrollment.workflow_key,
            "version": enrollment.version,
            "record_id": enrollment.record_id,
            "object_type": enrollment.object_type,
            "status": enrollment.status,
            "reason": enrollment.reason,
            "source": enrollment.source,
            "enrolled_at": _iso(enrollment.enrolled_at),
            "ended_at": _iso(enrollment.ended_at),
            "temporal_workflow_id": enrollment.temporal_workflow_id,
            "steps": [step_view(s) for s in steps],
        }
    )


def list_enrollments(
    app: App, key: str, *, record_id: str | None = None, status: str | None = None
) -> list[EnrollmentView]:
    checked_key(key)
    if record_id is not None:
        checked(check_record_id, record_id)
    with app.sessions() as session:
        if WorkflowRepository(session).get(key) is None:
            raise UserError(f"no workflow '{key}'")
        repo = EnrollmentRepository(session)
        found = repo.find(key, record_id=record_id, statuses=[status] if status else None)
        steps = repo.steps([e.id for e in found])
        return [enrollment_view(e, steps[e.id]) for e in found]


def history(app: App, key: str, record_id: str) -> HistoryView:
    """One record in one workflow: why it is (not) enrolled now, and every enrollment it had,
    oldest first, with its timeline."""

    checked_key(key)
    checked(check_record_id, record_id)
    object_type, explanation = explain_record(app, key, record_id)
    return HistoryView(
        workflow=key,
        record_id=record_id,
        object_type=object_type,
        explanation=explanation.as_json(),
        enrollments=list_enrollments(app, key, record_id=record_id),
    )


def outbox(app: App) -> list[OutboxView]:
    with app.sessions() as session:
        return [
            OutboxView(
                to=m.to,
                subject=m.subject,
                body=m.body,
                workflow=m.workflow_key,
                action_id=m.action_id,
                record_id=m.record_id,
                sent_at=_iso(m.sent_at),
                kind=m.kind,
                message_id=m.message_id,
                delivery_status=m.delivery_status,
            )
            for m in OutboxRepository(session).all()
        ]


def tasks(app: App) -> list[TaskView]:
    with app.sessions() as session:
        return [
            TaskView(
                title=t.title,
                assignee=t.assignee,
                due_at=_iso(t.due_at),
                record_id=t.record_id,
                workflow=t.workflow_key,
                action_id=t.action_id,
                created_at=_iso(t.created_at),
            )
            for t in TaskRepository(session).all()
        ]

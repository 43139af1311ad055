"""Activities that produce messages and tasks: the outbox and the task list."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from crmflow.definitions import CreateTaskAction, NotifyAction, SendEmailAction
from crmflow.store import OutboxMessage, OutboxRepository, RecordRepository, Task, TaskRepository
from crmflow.templates import TemplateProblem, render

from ._once import run_once
from .models import ActionInput, ActionResult, EnrollmentContext


def message_id(ctx: EnrollmentContext, action_id: str) -> str:
    """Stable across retries: a receiver can tell a resent copy from a new message."""
    return f"<{ctx.workflow_key}.{ctx.enrollment_id}.{action_id}@crmflow>"


def _looks_like_address(text: str) -> bool:
    local, _, domain = text.partition("@")
    return bool(local) and "." in domain and " " not in text and not domain.startswith(".")


class MessageActivities:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @activity.defn(name="send_email")
    def send_email(self, input: ActionInput) -> ActionResult:
        return run_once(self.sessions, input, lambda session: self._send(session, input))

    @activity.defn(name="create_task")
    def create_task(self, input: ActionInput) -> ActionResult:
        return run_once(self.sessions, input, lambda session: self._create_task(session, input))

    def _render(self, source: str, props: dict, ctx: EnrollmentContext) -> str:
        return render(
            source,
            properties=props,
            workflow_key=ctx.workflow_key,
            workflow_name=ctx.workflow_name,
            enrollment_id=str(ctx.enrollment_id),
        )

    def _send(self, session: Session, input: ActionInput) -> ActionResult:
        ctx, action = input.context, input.action
        if not isinstance(action, SendEmailAction | NotifyAction):
            raise TypeError(f"send_email cannot run a {action.type} action")
        record = RecordRepository(session).get(ctx.object_type, ctx.record_id)
        props = dict(record.properties) if record is not None else {}
        try:
            to_template = action.to if action.to else "{{ record.email }}"
            to = self._render(to_template, props, ctx).strip()
            subject = self._render(action.subject, props, ctx)
            body = self._render(action.body, props, ctx)
        except TemplateProblem as exc:
            return ActionResult(outcome=f"failed: {exc}", failed=True)
        if not to:
            return ActionResult(outcome="failed: the record has no email address", failed=True)
        if not _looks_like_address(to):
            return ActionResult(outcome=f"failed: invalid address {to!r}", failed=True)
        OutboxRepository(session).add(
            OutboxMessage(
                enrollment_id=ctx.enrollment_id,
                action_id=action.id,
                kind="notification" if isinstance(action, NotifyAction) else "email",
                to=to,
                subject=subject,
                body=body,
                message_id=message_id(ctx, action.id),
                workflow_key=ctx.workflow_key,
                object_type=ctx.object_type,
                record_id=ctx.record_id,
                delivery_status="outbox",
                sent_at=input.at,
            )
        )
        return ActionResult(outcome=f"email to {to}: {subject}", detail={"to": to})

    def _create_task(self, session: Session, input: ActionInput) -> ActionResult:
        ctx, action = input.context, input.action
        if not isinstance(action, CreateTaskAction):
            raise TypeError(f"create_task cannot run a {action.type} action")
        record = RecordRepository(session).get(ctx.object_type, ctx.record_id)
        props = dict(record.properties) if record is not None else {}
        try:
            title = self._render(action.title, props, ctx)
            assignee = (
                self._render(action.assignee, props, ctx).strip() if action.assignee else None
            )
        except TemplateProblem as exc:
            return ActionResult(outcome=f"failed: {exc}", failed=True)
        due_at = input.at + action.due_in if action.due_in is not None else None
        TaskRepository(session).add(
            Task(
                enrollment_id=ctx.enrollment_id,
                action_id=action.id,
                title=title,
                assignee=assignee or None,
                due_at=due_at,
                workflow_key=ctx.workflow_key,
                object_type=ctx.object_type,
                record_id=ctx.record_id,
                created_at=input.at,
            )
        )
        due = f", due {due_at:%Y-%m-%d %H:%M} UTC" if due_at else ""
        return ActionResult(outcome=f"task '{title}'{due}")

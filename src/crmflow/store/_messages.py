"""Repositories of the email outbox and of tasks."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ._tables import OutboxMessage, Task


class OutboxRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def for_action(self, enrollment_id: int, action_id: str) -> OutboxMessage | None:
        return self.session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.enrollment_id == enrollment_id, OutboxMessage.action_id == action_id
            )
        ).one_or_none()

    def add(self, message: OutboxMessage) -> OutboxMessage:
        self.session.add(message)
        self.session.flush()
        return message

    def all(
        self, *, workflow_key: str | None = None, record_id: str | None = None
    ) -> list[OutboxMessage]:
        stmt = select(OutboxMessage)
        if workflow_key is not None:
            stmt = stmt.where(OutboxMessage.workflow_key == workflow_key)
        if record_id is not None:
            stmt = stmt.where(OutboxMessage.record_id == record_id)
        return list(self.session.scalars(stmt.order_by(OutboxMessage.sent_at, OutboxMessage.id)))


class TaskRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def for_action(self, enrollment_id: int, action_id: str) -> Task | None:
        return self.session.scalars(
            select(Task).where(Task.enrollment_id == enrollment_id, Task.action_id == action_id)
        ).one_or_none()

    def add(self, task: Task) -> Task:
        self.session.add(task)
        self.session.flush()
        return task

    def all(self, *, workflow_key: str | None = None, record_id: str | None = None) -> list[Task]:
        stmt = select(Task)
        if workflow_key is not None:
            stmt = stmt.where(Task.workflow_key == workflow_key)
        if record_id is not None:
            stmt = stmt.where(Task.record_id == record_id)
        return list(self.session.scalars(stmt.order_by(Task.created_at, Task.id)))


__all__ = ["OutboxRepository", "TaskRepository"]

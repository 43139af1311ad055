"""Repository of enrollments and their steps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Table, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crmflow.definitions import ACTIVE_STATUSES

from ._records import StoreError
from ._tables import Enrollment, EnrollmentStep, Record

# The plain table for `create_many`: the ORM's bulk path would build, track and expire an
# object per row for nothing.
_ENROLLMENTS = cast(Table, Enrollment.__table__)


class AlreadyEnrolled(StoreError):
    def __init__(self, key: str, object_type: str, record_id: str) -> None:
        super().__init__(f"{object_type} '{record_id}' is already enrolled in '{key}'")


def temporal_workflow_id(key: str, object_type: str, record_id: str, seq: int) -> str:
    """Readable and deterministic: the n-th enrollment of a record in a workflow."""
    return f"{key}:{object_type}:{record_id}:{seq}"


@dataclass(frozen=True, slots=True)
class NewEnrollment:
    """An enrollment `create_many` wrote, as its callers need it (cheaper than an ORM object
    for a page or a batch of hundreds)."""

    id: int
    record_id: str
    seq: int
    status: str
    temporal_workflow_id: str
    enrolled_at: datetime


@dataclass(frozen=True, slots=True)
class StepWrite:
    """A step to store (idempotent on enrollment and action)."""

    action_id: str
    type: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    detail: dict[str, Any]


class EnrollmentRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create(
        self,
        *,
        key: str,
        version: int,
        object_type: str,
        record_id: str,
        source: str,
        now: datetime,
        trigger_change_id: int | None = None,
        origin: str | None = None,
    ) -> Enrollment:
        """A new running enrollment. Raises AlreadyEnrolled when one is running or paused: the
        partial unique index makes this hold under concurrency too."""
        if self.active_for(key, object_type, record_id) is not None:
            raise AlreadyEnrolled(key, object_type, record_id)
        seq = 1 + int(
            self.session.scalar(
                select(func.coalesce(func.max(Enrollment.seq), 0)).where(
                    Enrollment.workflow_key == key,
                    Enrollment.object_type == object_type,
                    Enrollment.record_id == record_id,
                )
            )
            or 0
        )
        enrollment = Enrollment(
            workflow_key=key,
            version=version,
            object_type=object_type,
            record_id=record_id,
            seq=seq,
            status="running",
            source=source,
            enrolled_at=now,
            temporal_workflow_id=temporal_workflow_id(key, object_type, record_id, seq),
            trigger_change_id=trigger_change_id,
            origin=origin,
        )
        try:
            with self.session.begin_nested():
                self.session.add(enrollment)
                self.session.flush()
        except IntegrityError:
            raise AlreadyEnrolled(key, object_type, record_id) from None
        return enrollment

    def create_many(
        self,
        *,
        key: str,
        version: int,
        object_type: str,
        record_ids: Sequence[str],
        source: str,
        now: datetime,
        trigger_change_ids: Mapping[str, int] | None = None,
    ) -> list[NewEnrollment]:
        """`create` for many records in one statement (a scheduled run's page, a dispatched
        batch's enrollments in one workflow: `trigger_change_ids` by record). Raises
        AlreadyEnrolled, and inserts none, when any of them is enrolled now (or a concurrent
        writer took one of their sequence numbers): the caller falls back to one at a time."""
        triggers = trigger_change_ids or {}
        if not record_ids:
            return []
        seqs: dict[str, int] = {
            record_id: seq
            for record_id, seq in self.session.execute(
                select(Enrollment.record_id, func.max(Enrollment.seq))
                .where(
                    Enrollment.workflow_key == key,
                    Enrollment.object_type == object_type,
                    Enrollment.record_id.in_(list(record_ids)),
                )
                .group_by(Enrollment.record_id)
            )
        }
        numbered = [
            (record_id, seq, temporal_workflow_id(key, object_type, record_id, seq))
            for record_id in record_ids
            for seq in [seqs.get(record_id, 0) + 1]
        ]
        rows = [
            {
                "workflow_key": key,
                "version": version,
                "object_type": object_type,
                "record_id": record_id,
                "seq": seq,
                "status": "running",
                "source": source,
                "enrolled_at": now,
                "temporal_workflow_id": workflow_id,
                "trigger_change_id": triggers.get(record_id),
            }
            for record_id, seq, workflow_id in numbered
        ]
        # Returned with their record ids: asking SQLite for rows in the order of the
        # parameters would insert one row per statement.
        statement = insert(_ENROLLMENTS).returning(Enrollment.record_id, Enrollment.id)
        try:
            with self.session.begin_nested():
                ids: dict[str, int] = {r: i for r, i in self.session.execute(statement, rows)}
        except IntegrityError:
            raise AlreadyEnrolled(key, object_type, ", ".join(record_ids[:3])) from None
        return [
            NewEnrollment(ids[record_id], record_id, seq, "running", workflow_id, now)
            for record_id, seq, workflow_id in numbered
        ]

    def active_among(
        self, key: str, object_type: str, record_ids: Sequence[str]
    ) -> dict[str, Enrollment]:
        """The running or paused enrollments in `key` of these records, by record id."""
        return {
            e.record_id: e
            for e in self.session.scalars(
                select(Enrollment).where(
                    Enrollment.workflow_key == key,
                    Enrollment.object_type == object_type,
                    Enrollment.record_id.in_(list(record_ids)),
                    Enrollment.status.in_(ACTIVE_STATUSES),
                )
            )
        }

    def by_trigger(self, key: str, change_id: int) -> Enrollment | None:
        """The enrollment a change already caused in a workflow, if any."""
        return self.session.scalars(
            select(Enrollment).where(
                Enrollment.workflow_key == key, Enrollment.trigger_change_id == change_id
            )
        ).one_or_none()

    def by_triggers(self, change_ids: Sequence[int]) -> dict[tuple[str, int], Enrollment]:
        """`by_trigger` for many changes: by (workflow key, change id)."""
        if not change_ids:
            return {}
        return {
            (e.workflow_key, e.trigger_change_id or 0): e
            for e in self.session.scalars(
                select(Enrollment).where(Enrollment.trigger_change_id.in_(list(change_ids)))
            )
        }

    def by_origin(self, key: str, origin: str) -> Enrollment | None:
        """The enrollment an enroll_in_workflow step already made in a workflow, if any."""
        return self.session.scalars(
            select(Enrollment).where(Enrollment.workflow_key == key, Enrollment.origin == origin)
        ).one_or_none()

    def active_versions(self) -> set[tuple[str, int]]:
        """(workflow, version) pairs that have running or paused enrollments."""
        return {
            (key, version)
            for key, version in self.session.execute(
                select(Enrollment.workflow_key, Enrollment.version)
                .where(Enrollment.status.in_(ACTIVE_STATUSES))
                .distinct()
            )
        }

    def get(self, enrollment_id: int, *, for_update: bool = False) -> Enrollment | None:
        return self.session.get(Enrollment, enrollment_id, with_for_update=for_update)

    def active_for(self, key: str, object_type: str, record_id: str) -> Enrollment | None:
        return self.session.scalars(
            select(Enrollment).where(
                Enrollment.workflow_key == key,
                Enrollment.object_type == object_type,
                Enrollment.record_id == record_id,
                Enrollment.status.in_(ACTIVE_STATUSES),
            )
        ).one_or_none()

    def by_workflow_id(self, temporal_workflow_id: str) -> Enrollment | None:
        return self.session.scalars(
            select(Enrollment).where(Enrollment.temporal_workflow_id == temporal_workflow_id)
        ).one_or_none()

    def by_workflow_ids(self, temporal_workflow_ids: Sequence[str]) -> dict[str, Enrollment]:
        if not temporal_workflow_ids:
            return {}
        return {
            e.temporal_workflow_id: e
            for e in self.session.scalars(
                select(Enrollment).where(
                    Enrollment.temporal_workflow_id.in_(list(temporal_workflow_ids))
                )
            )
        }

    def active_page(self, *, after: int, limit: int, enrolled_before: datetime) -> list[Enrollment]:
        """Running or paused enrollments with an id above `after`, in id order, enrolled before
        `enrolled_before` (a page of the reconciliation sweep)."""
        return list(
            self.session.scalars(
                select(Enrollment)
                .where(
                    Enrollment.id > after,
                    Enrollment.status.in_(ACTIVE_STATUSES),
                    Enrollment.enrolled_at < enrolled_before,
                )
                .order_by(Enrollment.id)
                .limit(limit)
            )
        )

    def waiting_steps(self, enrollment_ids: Sequence[int]) -> dict[int, set[str]]:
        """Per enrollment, the actions of its `wait_for_event` steps in progress (started,
        not finished): what it waits for now."""
        found: dict[int, set[str]] = {}
        if not enrollment_ids:
            return found
        for enrollment_id, action_id in self.session.execute(
            select(EnrollmentStep.enrollment_id, EnrollmentStep.action_id).where(
                EnrollmentStep.enrollment_id.in_(list(enrollment_ids)),
                EnrollmentStep.type == "wait_for_event",
                EnrollmentStep.finished_at.is_(None),
            )
        ):
            found.setdefault(enrollment_id, set()).add(action_id)
        return found

    def of_record(self, object_type: str, record_id: str) -> list[Enrollment]:
        """Every enrollment of one record, in every workflow, oldest first."""
        return list(
            self.session.scalars(
                select(Enrollment)
                .where(Enrollment.object_type == object_type, Enrollment.record_id == record_id)
                .order_by(Enrollment.id)
            )
        )

    def of_records(
        self, object_type: str, record_ids: Sequence[str]
    ) -> dict[str, list[Enrollment]]:
        """`of_record` for many records of one object type (one query), by record id."""
        found: dict[str, list[Enrollment]] = {}
        if not record_ids:
            return found
        for e in self.session.scalars(
            select(Enrollment)
            .where(
                Enrollment.object_type == object_type, Enrollment.record_id.in_(list(record_ids))
            )
            .order_by(Enrollment.id)
        ):
            found.setdefault(e.record_id, []).append(e)
        return found

    @staticmethod
    def enrolled_clause(key: str, *, statuses: Sequence[str] | None = None) -> ColumnElement[bool]:
        """Holds, in a query over `records`, for a record enrolled in `key` with one of these
        statuses (any status: ever enrolled)."""
        where = [
            Enrollment.workflow_key == key,
            Enrollment.object_type == Record.object_type,
            Enrollment.record_id == Record.id,
        ]
        if statuses:
            where.append(Enrollment.status.in_(list(statuses)))
        return exists().where(*where)

    def find(
        self,
        key: str,
        *,
        object_type: str | None = None,
        record_id: str | None = None,
        statuses: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[Enrollment]:
        stmt = select(Enrollment).where(Enrollment.workflow_key == key)
        if object_type is not None:
            stmt = stmt.where(Enrollment.object_type == object_type)
        if record_id is not None:
            stmt = stmt.where(Enrollment.record_id == record_id)
        if statuses:
            stmt = stmt.where(Enrollment.status.in_(list(statuses)))
        stmt = stmt.order_by(Enrollment.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        return list(self.session.scalars(stmt))

    def set_status(
        self,
        enrollment_id: int,
        status: str,
        *,
        reason: str | None = None,
        ended_at: datetime | None = None,
        only_from: Iterable[str] | None = None,
    ) -> bool:
        """Change the status; with `only_from`, only when the current status is one of those
        (so a late pause never reopens an ended enrollment). Returns whether a row changed."""
        stmt = update(Enrollment).where(Enrollment.id == enrollment_id)
        if only_from is not None:
            stmt = stmt.where(Enrollment.status.in_(list(only_from)))
        values: dict[str, Any] = {"status": status, "reason": reason}
        if ended_at is not None:
            values["ended_at"] = ended_at
        result = cast(CursorResult[Any], self.session.execute(stmt.values(**values)))
        return bool(result.rowcount)

    def set_status_for_workflow(
        self, key: str, *, from_status: str, to_status: str
    ) -> list[Enrollment]:
        """Move every enrollment of a workflow from one active status to another."""
        found = self.find(key, statuses=[from_status])
        if found:
            self.session.execute(
                update(Enrollment)
                .where(Enrollment.id.in_([e.id for e in found]), Enrollment.status == from_status)
                .values(status=to_status)
            )
        return found

    def steps(self, enrollment_ids: Sequence[int]) -> dict[int, list[EnrollmentStep]]:
        result: dict[int, list[EnrollmentStep]] = {i: [] for i in enrollment_ids}
        if not enrollment_ids:
            return result
        for step in self.session.scalars(
            select(EnrollmentStep)
            .where(EnrollmentStep.enrollment_id.in_(list(enrollment_ids)))
            .order_by(EnrollmentStep.started_at, EnrollmentStep.id)
        ):
            result[step.enrollment_id].append(step)
        return result

    def step(
        self, enrollment_id: int, action_id: str, *, for_update: bool = False
    ) -> EnrollmentStep | None:
        """The step of (enrollment, action). `for_update`: locked until the transaction ends,
        and read afresh (another attempt may have finished it since it was last read)."""
        stmt = select(EnrollmentStep).where(
            EnrollmentStep.enrollment_id == enrollment_id, EnrollmentStep.action_id == action_id
        )
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return self.session.scalars(stmt).one_or_none()

    def write_step(self, enrollment_id: int, step: StepWrite) -> EnrollmentStep:
        """Insert or complete the step of (enrollment, action); never creates a second one."""
        existing = self.step(enrollment_id, step.action_id)
        if existing is None:
            existing = EnrollmentStep(
                enrollment_id=enrollment_id,
                action_id=step.action_id,
                type=step.type,
                started_at=step.started_at,
                finished_at=step.finished_at,
                outcome=step.outcome,
                detail=step.detail,
            )
            self.session.add(existing)
        elif existing.finished_at is None:
            existing.finished_at = step.finished_at
            existing.outcome = step.outcome
            existing.detail = {**existing.detail, **step.detail}
        self.session.flush()
        return existing

    def count_by_status(self, key: str) -> dict[str, int]:
        rows = self.session.execute(
            select(Enrollment.status, func.count())
            .where(Enrollment.workflow_key == key)
            .group_by(Enrollment.status)
        )
        return {status: int(n) for status, n in rows}

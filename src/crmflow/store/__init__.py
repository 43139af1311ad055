"""The store: SQLAlchemy tables and repositories. All SQL of crmflow lives here."""

from ._changes import ChangeRepository, changed_properties
from ._enrollments import (
    ENDED_STATUSES,
    AlreadyEnrolled,
    EnrollmentRepository,
    StepWrite,
    temporal_workflow_id,
)
from ._messages import OutboxRepository, TaskRepository
from ._records import (
    AssociationRepository,
    EventRepository,
    ListRepository,
    RecordNotFound,
    RecordRepository,
    StoreError,
    load_snapshot,
    merge_properties,
)
from ._runs import ScheduledRunRepository
from ._tables import (
    ACTIVE_STATUSES,
    Base,
    Enrollment,
    EnrollmentStep,
    Event,
    Lease,
    ListMembership,
    OutboxMessage,
    Record,
    RecordAssociation,
    RecordChange,
    RecordList,
    Task,
    Workflow,
    WorkflowVersion,
)
from ._workflows import WorkflowNotFound, WorkflowRepository

__all__ = [
    "ACTIVE_STATUSES",
    "ENDED_STATUSES",
    "AlreadyEnrolled",
    "AssociationRepository",
    "ChangeRepository",
    "changed_properties",
    "RecordChange",
    "Lease",
    "Base",
    "Enrollment",
    "EnrollmentRepository",
    "EnrollmentStep",
    "Event",
    "EventRepository",
    "ListMembership",
    "ListRepository",
    "OutboxMessage",
    "OutboxRepository",
    "Record",
    "RecordAssociation",
    "RecordList",
    "RecordNotFound",
    "RecordRepository",
    "ScheduledRun",
    "ScheduledRunRepository",
    "StepWrite",
    "StoreError",
    "Task",
    "TaskRepository",
    "Workflow",
    "WorkflowNotFound",
    "WorkflowRepository",
    "WorkflowVersion",
    "load_snapshot",
    "merge_properties",
    "temporal_workflow_id",
]

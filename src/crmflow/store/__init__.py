"""The store: SQLAlchemy tables and repositories. All SQL of crmflow lives here.

`CrossingRepository` is imported from `crmflow.store._crossings`, not from here: it compiles
conditions, and the condition compiler (`crmflow.conditions._sql`) imports this package's
tables, so importing it here would make the two packages' initialisation depend on which one is
imported first.
"""

from ._changes import (
    ChangeNotParked,
    ChangeRepository,
    Failure,
    FeedEntry,
    changed_properties,
)
from ._enrollments import (
    ENDED_STATUSES,
    AlreadyEnrolled,
    EnrollmentRepository,
    StepWrite,
    temporal_workflow_id,
)
from ._leases import Fence, LeaseRepository, database_now
from ._messages import OutboxRepository, TaskRepository
from ._records import (
    AssociationRepository,
    EventRepository,
    ListRepository,
    RecordNotFound,
    RecordRepository,
    StoreError,
    load_snapshot,
    load_snapshots,
    merge_properties,
)
from ._runs import ScheduledRunRepository
from ._sweeps import SweepConflict, SweepWindow, TimeSweepRepository
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
    RecordDate,
    RecordList,
    Task,
    TimeSweep,
    Workflow,
    WorkflowVersion,
)
from ._workflows import BrokenVersion, WorkflowNotFound, WorkflowRepository, stored_definition

__all__ = [
    "ACTIVE_STATUSES",
    "ENDED_STATUSES",
    "AlreadyEnrolled",
    "AssociationRepository",
    "BrokenVersion",
    "ChangeNotParked",
    "ChangeRepository",
    "Failure",
    "FeedEntry",
    "Fence",
    "LeaseRepository",
    "database_now",
    "stored_definition",
    "changed_properties",
    "RecordChange",
    "RecordDate",
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
    "SweepConflict",
    "SweepWindow",
    "Task",
    "TaskRepository",
    "TimeSweep",
    "TimeSweepRepository",
    "Workflow",
    "WorkflowNotFound",
    "WorkflowRepository",
    "WorkflowVersion",
    "load_snapshot",
    "load_snapshots",
    "merge_properties",
    "temporal_workflow_id",
]

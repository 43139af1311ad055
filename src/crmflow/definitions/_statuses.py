"""The statuses of an enrollment: one enum for the interpreter, the store, the services and
the CLI (values as stored and as printed)."""

from __future__ import annotations

from enum import StrEnum


class EnrollmentStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    GOAL_MET = "goal_met"
    UNENROLLED = "unenrolled"
    FAILED = "failed"


# Still going (a record has at most one active enrollment per workflow), and ended.
ACTIVE_STATUSES = (EnrollmentStatus.RUNNING.value, EnrollmentStatus.PAUSED.value)
ENDED_STATUSES = tuple(s.value for s in EnrollmentStatus if s.value not in ACTIVE_STATUSES)

"""The pure rules of enrollment, decided without I/O: who may enroll at all (`refusal`) and
what one record change calls for (`decide`)."""

from ._decide import (
    CREATED,
    DELETED,
    EVENT,
    LISTED,
    UNLISTED,
    UPDATED,
    ActiveEnrollment,
    Change,
    Decision,
    Enroll,
    Leave,
    Trigger,
    decide,
    reads_change,
    reenroll_fired,
    snapshot_before,
)
from ._eligibility import refusal

__all__ = [
    "CREATED",
    "DELETED",
    "EVENT",
    "LISTED",
    "UNLISTED",
    "UPDATED",
    "ActiveEnrollment",
    "Change",
    "Decision",
    "Enroll",
    "Leave",
    "Trigger",
    "decide",
    "reads_change",
    "reenroll_fired",
    "refusal",
    "snapshot_before",
]

"""The pure rules of enrollment, decided without I/O: who may enroll at all (`refusal`) and
what one record change calls for (`decide`)."""

from ._decide import (
    CREATED,
    DELETED,
    EVENT,
    LISTED,
    TIME,
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
from ._eligibility import enrollable, refusal, suppressing_lists, suppression

__all__ = [
    "CREATED",
    "DELETED",
    "EVENT",
    "LISTED",
    "TIME",
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
    "enrollable",
    "refusal",
    "suppressing_lists",
    "suppression",
    "snapshot_before",
]

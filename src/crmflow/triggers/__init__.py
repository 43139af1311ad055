"""Automatic enrollment: the change feed turned into enrollments and signals."""

from ._decide import Change, Decision, Enroll, Leave, Trigger, decide
from ._dispatcher import Dispatcher, load_index
from ._fanout import Outcome, enroll_selected
from ._index import TriggerIndex
from ._starting import (
    EnrollmentStarter,
    EnrollOutcome,
    Ready,
    SignalFailed,
    enrollment_search_attributes,
    refusal,
)

__all__ = [
    "Change",
    "Decision",
    "Dispatcher",
    "Enroll",
    "EnrollOutcome",
    "EnrollmentStarter",
    "Leave",
    "Outcome",
    "Ready",
    "SignalFailed",
    "Trigger",
    "TriggerIndex",
    "decide",
    "enroll_selected",
    "enrollment_search_attributes",
    "load_index",
    "refusal",
]

"""Starting enrollments from the client side: one record (`EnrollmentStarter`: the enrollment
row, then its Temporal workflow; signals to running enrollments) or many selected in SQL
(`enroll_selected`). Built once by the wiring code and shared by the dispatcher, the CLI's
services, simulate and the activities that enroll."""

from ._fanout import CONCURRENCY, PAGE_SIZE, Outcome, enroll_selected
from ._starting import (
    EnrollmentStarter,
    EnrollOutcome,
    Prepared,
    Ready,
    SignalFailed,
    Triggered,
    enrollment_search_attributes,
)

__all__ = [
    "CONCURRENCY",
    "PAGE_SIZE",
    "EnrollOutcome",
    "EnrollmentStarter",
    "Outcome",
    "Prepared",
    "Ready",
    "SignalFailed",
    "Triggered",
    "enroll_selected",
    "enrollment_search_attributes",
]

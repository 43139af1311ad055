"""Temporal side of crmflow: the enrollment interpreter and the worker."""

from ._enrollment import EXECUTABLE_ACTION_TYPES, EnrollmentWorkflow
from ._scheduled import ScheduledRunWorkflow
from ._time import zone_of
from ._time_sweep import TimeSweepWorkflow, ensure_time_sweep_schedule
from ._worker import TASK_QUEUE, build_worker, sandboxed_workflow_runner, workflow_runner

__all__ = [
    "TimeSweepWorkflow",
    "ensure_time_sweep_schedule",
    "zone_of",
    "ScheduledRunWorkflow",
    "EXECUTABLE_ACTION_TYPES",
    "TASK_QUEUE",
    "EnrollmentWorkflow",
    "build_worker",
    "workflow_runner",
    "sandboxed_workflow_runner",
]

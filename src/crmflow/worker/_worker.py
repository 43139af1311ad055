"""Worker wiring: which workflows and activities run, with which dependencies."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from crmflow.activities.config import OutwardSettings
from crmflow.activities.custom import CustomActivities, HandlerRegistry
from crmflow.activities.enrollments import EnrollmentActivities
from crmflow.activities.messages import MessageActivities
from crmflow.activities.ports import Enroller
from crmflow.activities.records import RecordActivities
from crmflow.activities.schedules import SchedulingActivities
from crmflow.activities.time_sweep import Clock, TimeSweepActivities
from crmflow.activities.webhooks import WebhookActivities
from crmflow.activities.workflows import WorkflowActivities

from ._enrollment import EnrollmentWorkflow
from ._scheduled import ScheduledRunWorkflow
from ._time_sweep import TimeSweepWorkflow

TASK_QUEUE = "crmflow"


def workflow_runner() -> WorkflowRunner:
    """The runner of crmflow's workflows in the worker: unsandboxed. The sandbox re-imports every
    workflow module for each run (the interpreter's modules cost ~16 ms CPU per enrollment, more
    than the rest of its workflow code), and crmflow runs only its own workflows, whose
    determinism is checked instead by tests: replays of recorded histories under
    `sandboxed_workflow_runner()`, and a static check of the workflow modules
    (tests/worker/test_determinism.py)."""
    return UnsandboxedWorkflowRunner()


def sandboxed_workflow_runner() -> SandboxedWorkflowRunner:
    """The default sandbox, with zoneinfo usable (time zones are computed in workflow code) and
    every module that is not workflow code passed through: loaded once, not re-imported for each
    workflow run (importing the worker package would otherwise re-import SQLAlchemy per run).
    The tests replay histories under it, so that a workflow that reads the clock, draws random
    numbers or does I/O fails there even though the worker runs unsandboxed."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(
        "crmflow.worker._worker",
        "crmflow.worker._policies",
        "crmflow.worker.search_attributes",
        "crmflow.activities",
        "crmflow.triggers",
        "crmflow.enrolling",
        "crmflow.rules",
        "crmflow.schedules",
        "crmflow.store",
        "sqlalchemy",
        "crmflow.definitions",
        "crmflow.activities.models",
        "crmflow.conditions",
        "crmflow.templates",
        "pydantic",
        "jinja2",
        "markupsafe",
    )
    return SandboxedWorkflowRunner(
        restrictions=restrictions.__class__(
            passthrough_modules=restrictions.passthrough_modules,
            invalid_modules=restrictions.invalid_modules,
            invalid_module_members=restrictions.invalid_module_members.with_child_unrestricted(
                "zoneinfo"
            ),
        )
    )


WORKFLOWS = [EnrollmentWorkflow, ScheduledRunWorkflow, TimeSweepWorkflow]


def build_worker(
    client: Client,
    sessions: sessionmaker[Session],
    *,
    enroller: Enroller,
    task_queue: str = TASK_QUEUE,
    executor: ThreadPoolExecutor | None = None,
    max_concurrent_activities: int = 32,
    extra_workflows: Sequence[type] = (),
    outward: OutwardSettings | None = None,
    time_sweep_clock: Clock | None = None,
) -> Worker:
    """`enroller`: the starter of `crmflow.enrolling` that the wiring code built (for the
    activities that enroll and the scheduled runs). `outward`: SMTP, webhook and custom action
    settings (default: outbox only, private webhook addresses refused, no rate limit,
    entry-point handlers only). `simulate` passes `OutwardSettings(dry_run=True)`: nothing
    leaves the worker. `time_sweep_clock`: the time sweep's clock (default: the database's;
    tests control it)."""
    outward = outward or OutwardSettings()
    records = RecordActivities(sessions)
    messages = MessageActivities(sessions, smtp=None if outward.dry_run else outward.smtp)
    enrollments = EnrollmentActivities(sessions)
    scheduling = SchedulingActivities(sessions, enroller)
    webhooks = WebhookActivities(
        sessions,
        allow_private=outward.allow_private_webhooks,
        rate=outward.webhook_rate,
        env_allowed=outward.webhook_env,
        dry_run=outward.dry_run,
    )
    workflows = WorkflowActivities(sessions, enroller)
    time_sweep = (
        TimeSweepActivities(sessions)
        if time_sweep_clock is None
        else TimeSweepActivities(sessions, clock=time_sweep_clock)
    )
    custom = CustomActivities(sessions, HandlerRegistry(outward.actions), dry_run=outward.dry_run)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        activities=[
            records.update_record,
            records.create_record,
            webhooks.call_webhook,
            workflows.enroll_in_workflow,
            workflows.unenroll_from_workflow,
            custom.run_custom_action,
            messages.send_email,
            messages.create_task,
            enrollments.evaluate_branch,
            enrollments.record_step,
            enrollments.read_timing,
            enrollments.finish_enrollment,
            scheduling.run_schedule,
            time_sweep.sweep_time,
        ],
        activity_executor=executor or ThreadPoolExecutor(max_workers=max_concurrent_activities),
        max_concurrent_activities=max_concurrent_activities,
        workflow_runner=workflow_runner(),
    )

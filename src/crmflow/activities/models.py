"""Inputs and results of the enrollment workflow, its signals and its activities.

Pure pydantic: imported by workflow code inside the sandbox and by the activities.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crmflow.definitions import Action, EnrollmentStatus, WorkflowDefinition


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class EnrollmentContext(_Model):
    """Who is enrolled where: carried by every activity call of an enrollment."""

    enrollment_id: int
    workflow_key: str
    workflow_name: str
    version: int
    object_type: str
    record_id: str


class StepInput(_Model):
    """A step without an effect of its own (a delay), stored as it starts and as it ends."""

    context: EnrollmentContext
    action_id: str
    type: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None


class Resume(_Model):
    """Where a run that continued as new (its history had grown long) picks up: the action
    it was at and, if it was waiting, the wait in progress."""

    action_id: str
    steps: int = 0
    paused: bool = False
    pending: list[StepInput] = Field(
        default_factory=list, description="Steps not stored yet, written with the next write"
    )
    wait: Literal["delay", "event", "window", "queue"] | None = Field(
        default=None, description="The wait the action was in, resumed as it was"
    )
    started: datetime | None = Field(default=None, description="delay, event: the step's start")
    wake: datetime | None = Field(default=None, description="delay: when it ends")
    shown: str | None = Field(default=None, description="delay: its end as its outcome shows it")
    due: datetime | None = Field(default=None, description="window: when the action came due")
    held: str | None = Field(default=None, description="window, queue: why the action was held")


# The interpreter behaviour a new enrollment's run is started under, carried in its input (see
# `EnrollmentInput.generation`). 1: the run may continue as new without recording the
# `continue-as-new` patch (a marker and a search attribute upsert per enrollment saved), and a
# duration delay that directly follows an action is stored as started by that action's
# transaction (`ActionInput.then`) instead of a store write of its own. 2: actions whose effect
# is a store transaction alone run as local activities (`ActionRun.local`): no activity task
# and no workflow task of their own (a run records that choice once, as the patch
# `store-actions-local`, so that a worker of an earlier version that ran it is followed).
GENERATION = 2


class EnrollmentInput(_Model):
    """Start of one enrollment: the definition version travels with it, so a later publish never
    changes a running enrollment."""

    context: EnrollmentContext
    definition: WorkflowDefinition
    generation: int = Field(
        default=0,
        description="The interpreter behaviour the run was started under (`GENERATION` when it "
        "was started, 0 in inputs written before the field existed): deterministic, being in the "
        "run's first event, so behaviour that depends on it needs no patch marker",
    )
    resume: Resume | None = Field(
        default=None, description="Set when the run continues an earlier run of the enrollment"
    )


class EnrollmentResult(_Model):
    status: EnrollmentStatus
    reason: str | None = None
    steps: int = 0


class UnenrollSignal(_Model):
    reason: str = "unenrolled manually"


class GoalMetSignal(_Model):
    detail: str | None = None


class FinishInput(_Model):
    context: EnrollmentContext
    status: EnrollmentStatus
    reason: str | None = None
    at: datetime
    steps: list[StepInput] = Field(
        default_factory=list, description="Steps not yet stored, written in the same transaction"
    )


def waiting_until(wake: str) -> str:
    """The outcome of a delay in progress, as `enrollments` shows it."""
    return f"waiting until {wake}"


class DelayStart(_Model):
    """A duration delay that directly follows an action: stored as started, at the moment the
    action finished, in the action's own transaction."""

    action_id: str
    duration: timedelta

    def wake(self, started: datetime) -> datetime:
        """When the delay ends, started at `started` (in UTC, as the interpreter shows it)."""
        return started.astimezone(UTC) + self.duration


class ActionInput(_Model):
    context: EnrollmentContext
    action: Action
    at: datetime = Field(description="Workflow time at which the action came due")
    # Bookkeeping that rides along with the effect's transaction, saving a round trip each: the
    # end of a preceding delay, and the final status when this action is the last one.
    steps: list[StepInput] = Field(default_factory=list)
    finish: FinishInput | None = None
    then: DelayStart | None = Field(
        default=None, description="The delay that follows, stored as started with the action"
    )
    held: str | None = Field(
        default=None, description="Why the action ran later than it came due (execution window)"
    )


class ActionResult(_Model):
    outcome: str
    failed: bool = False
    next: str | None = Field(default=None, description="Chosen target, for branching actions")
    detail: dict[str, Any] = Field(default_factory=dict)
    then_started: datetime | None = Field(
        default=None,
        description="When the input's `then` delay was stored as started (the action's finish); "
        "None when it was not (the action chose another next action)",
    )
    retry_in: float | None = Field(
        default=None,
        description="Not done, nothing stored: run the action again in this many seconds (its "
        "turn in a rate limit's queue). The workflow waits, so a queue never uses up retries.",
    )


class TimingInput(_Model):
    """What the interpreter needs from the record to place an action or a delay in time."""

    context: EnrollmentContext
    timezone_property: str | None = None
    date_property: str | None = None


class TimingResult(_Model):
    timezone: str | None = Field(
        default=None, description="The record's own zone, when its property holds a valid one"
    )
    timezone_value: Any = Field(default=None, description="The raw timezone property value")
    date_value: Any = Field(default=None, description="The raw value of `date_property`")


class EventSignal(_Model):
    """An event tracked for the enrolled record, delivered by the dispatcher to enrollments
    that wait for events of that name."""

    name: str
    properties: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime
    event_id: int | None = None


class ScheduledRunInput(_Model):
    """One run of a scheduled workflow; the latest version is read when the run starts, so a
    publish takes effect for the very next run."""

    workflow_key: str
    trigger: Literal["schedule", "manual"] = "schedule"


class ScheduledRunResult(_Model):
    workflow_key: str
    version: int | None = None
    matched: int = 0
    enrolled: int = 0
    skipped: int = 0
    failed: int = 0
    note: str | None = None


class TimeSweepInput(_Model):
    """One run of the time sweep (started by the deployment's Temporal Schedule)."""


class TimeSweepResult(_Model):
    """What one run of the time sweep did."""

    workflows: int = 0  # workflows whose conditions hold a time-relative term
    windows: int = 0  # windows swept (watermarks advanced)
    candidates: int = 0  # records the SQL selection found crossing
    changes: int = 0  # "time passed" changes appended to the change feed
    caught_up: bool = True  # False: the run stopped at its budget; the next one goes on

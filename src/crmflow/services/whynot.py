"""Why a record is (not) enrolled in a workflow now, by the rules of `crmflow.rules` (the same
the dispatcher and the starter apply), or what would bring it in: `history`'s explanation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crmflow.conditions import RecordSnapshot, explain
from crmflow.definitions import (
    ACTIVE_STATUSES,
    Reenroll,
    WorkflowDefinition,
)
from crmflow.rules import suppressing_lists
from crmflow.store import (
    Enrollment,
    EnrollmentRepository,
    RecordChange,
    RecordRepository,
    StoreError,
    Workflow,
    WorkflowRepository,
    load_snapshot,
)

from ._app import App
from ._base import UserError, utcnow
from .history_time import time_enrollment


@dataclass(frozen=True)
class Explanation:
    """Why a record is or is not enrolled in a workflow now."""

    state: str
    message: str
    details: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message, "details": self.details}


def explain_record(app: App, key: str, record_id: str) -> tuple[str, Explanation]:
    """The record's object type and why it is (not) enrolled in the workflow's latest version.
    A deleted record that was enrolled is explained; a record never seen is bad input."""
    now = utcnow()
    with app.sessions() as session:
        workflows = WorkflowRepository(session)
        workflow = workflows.get(key)
        if workflow is None:
            raise UserError(f"no workflow '{key}'")
        try:
            definition = workflows.definition(key)
        except StoreError as exc:  # its stored definition no longer loads
            raise UserError(str(exc)) from None
        object_type = definition.object_type
        enrollments = EnrollmentRepository(session).find(
            key, object_type=object_type, record_id=record_id
        )
        snapshot = load_snapshot(session, object_type, record_id)
        if snapshot is None and not enrollments:
            raise UserError(f"no {object_type} with id '{record_id}'")
        explanation = _why(
            definition,
            workflow,
            enrollments,
            snapshot,
            last_change=lambda: RecordRepository(session).last_change(object_type, record_id),
            now=now,
        )
    return object_type, explanation


def _why(
    definition: WorkflowDefinition,
    workflow: Workflow,
    enrollments: list[Enrollment],
    snapshot: RecordSnapshot | None,
    *,
    last_change: Callable[[], RecordChange | None],
    now: datetime,
) -> Explanation:
    """The first of the rules of `triggers.decide` (and of the starter) that keeps the record
    out, or what would bring it in."""
    key, enrollment = definition.key, definition.enrollment
    current = next((e for e in enrollments if e.status in ACTIVE_STATUSES), None)
    if current is not None:
        held = " while the workflow is inactive" if current.status == "paused" else ""
        return Explanation(
            "enrolled", f"enrolled now: {current.status}{held}, on version {current.version}"
        )
    if snapshot is None:
        return Explanation("deleted", f"the {definition.object_type} was deleted")
    inactive = "" if workflow.active else " (the workflow is inactive)"
    suppressed = suppressing_lists(definition, snapshot)
    if suppressed:
        return Explanation(
            "suppressed",
            f"suppressed: member of {', '.join(suppressed)}, a suppression list of the workflow: "
            f"never enrolled while a member{inactive}",
        )
    if definition.goal is not None:
        goal = explain(definition.goal.criteria, snapshot, now=now)
        if goal.holds:
            return Explanation(
                "goal_met",
                f"the goal is met already: a record that meets it is not enrolled{inactive}",
                goal.render().splitlines(),
            )
    if enrollment.criteria is None:
        return Explanation(
            "manual",
            f"a manual workflow enrolls records only by hand: "
            f"`crmflow enroll {key} {snapshot.id}`{inactive}",
        )
    verdict = explain(enrollment.criteria, snapshot, now=now)
    if not verdict.holds:
        later = time_enrollment(definition, workflow, enrollments, snapshot, now=now)
        return Explanation(
            "criteria_unmet",
            f"the enrollment criteria do not match now{inactive}" + (f"; {later}" if later else ""),
            verdict.render().splitlines(),
        )
    if enrollment.trigger == "schedule":
        when = "the next scheduled run" if workflow.active else "once activated, each run"
        return Explanation("scheduled", f"it matches the criteria: {when} enrolls it")
    again = _reenroll_triggers(enrollment.reenroll)
    if enrollments:
        last = enrollments[-1].status
        if again is None:
            return Explanation(
                "enrolled_before",
                f"enrolled before ({last}) and re-enrollment is off: a record enrolls at most "
                f"once{inactive}",
            )
        return Explanation(
            "reenroll",
            f"enrolled before ({last}); it enrolls again on {again}, while the criteria "
            f"match{inactive}",
        )
    if not workflow.active:
        if enrollment.enroll_existing:
            return Explanation(
                "inactive", "it matches; the workflow is inactive: activating it enrolls it"
            )
        return Explanation(
            "inactive",
            f"it matches; the workflow is inactive: `crmflow activate {key} --enroll-existing` "
            "would enroll it (plain activation enrolls only records that come to match later)",
        )
    change = last_change()
    activated = workflow.activated_change_id or 0
    if change is not None and change.id > activated and change.dispatched_at is None:
        return Explanation(
            "pending",
            "a change of the record waits for the dispatcher (is a worker running?): it "
            "enrolls the record if that change made it come to match",
        )
    if again is not None:
        return Explanation(
            "next_change",
            "it matches, but did not come to match since the workflow was activated: it "
            f"enrolls on {again}",
        )
    if change is None or change.id <= activated:
        return Explanation(
            "matched_before_activation",
            "it matched already when the workflow was activated and has not changed since: "
            f"records matching then enroll only with `crmflow activate {key} "
            "--enroll-existing`; otherwise it enrolls when it comes to match anew",
        )
    return Explanation(
        "matched_before_change",
        "it matches, but none of its changes since the workflow was activated made it come "
        "to match while it could enroll (it matched already before each, or was suppressed or "
        "met the goal then): it enrolls when it comes to match anew",
    )


def _reenroll_triggers(reenroll: Reenroll | None) -> str | None:
    if reenroll is None:
        return None
    parts = []
    if reenroll.properties:
        parts.append(f"a change of {', '.join(reenroll.properties)}")
    if reenroll.events:
        parts.append(f"a new {', '.join(reenroll.events)} event")
    if reenroll.lists:
        parts.append(f"joining list {', '.join(reenroll.lists)}")
    return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]

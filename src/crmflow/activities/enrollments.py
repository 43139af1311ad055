"""Activities of the enrollment itself: branching on the record, steps, status."""

from __future__ import annotations

import zoneinfo

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from crmflow.conditions import evaluate
from crmflow.definitions import BranchAction, ValueBranchAction, condition_reads
from crmflow.store import load_snapshot

from ._once import run_once, write_finish, write_steps
from .models import ActionInput, ActionResult, FinishInput, StepInput, TimingInput, TimingResult


def _display(value: object) -> str:
    return "(unknown)" if value is None else repr(value) if isinstance(value, str) else str(value)


class EnrollmentActivities:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @activity.defn(name="evaluate_branch")
    def evaluate_branch(self, input: ActionInput) -> ActionResult:
        return run_once(self.sessions, input, lambda session: self._branch(session, input))

    def _branch(self, session: Session, input: ActionInput) -> ActionResult:
        ctx, action = input.context, input.action
        match action:
            case BranchAction():
                events: set[str] = set()
                for case in action.branches:
                    events |= condition_reads(case.when).events
                snapshot = load_snapshot(
                    session, ctx.object_type, ctx.record_id, event_names=events
                )
                if snapshot is None:
                    return ActionResult(
                        outcome=f"{ctx.object_type} '{ctx.record_id}' no longer exists: otherwise",
                        next=action.otherwise,
                    )
                # The record as it is now, at the workflow's time (the simulated one in `simulate`).
                for case in action.branches:
                    if evaluate(case.when, snapshot, now=input.at):
                        return ActionResult(outcome=f"branch '{case.name}'", next=case.next)
                return ActionResult(outcome="no branch matched: otherwise", next=action.otherwise)
            case ValueBranchAction():
                snapshot = load_snapshot(session, ctx.object_type, ctx.record_id, event_names=())
                value = snapshot.properties.get(action.property) if snapshot else None
                key = None if value is None else str(value).strip().lower()
                for case_value, target in action.cases.items():
                    if key is not None and str(case_value).strip().lower() == key:
                        return ActionResult(
                            outcome=f"{action.property} is {_display(value)}: case '{case_value}'",
                            next=target,
                        )
                return ActionResult(
                    outcome=f"{action.property} is {_display(value)}: otherwise",
                    next=action.otherwise,
                )
        raise TypeError(f"evaluate_branch cannot run a {action.type} action")

    @activity.defn(name="read_timing")
    def read_timing(self, input: TimingInput) -> TimingResult:
        """The record's time zone and date property, read where the store may be read."""
        ctx = input.context
        with self.sessions() as session:
            snapshot = load_snapshot(session, ctx.object_type, ctx.record_id, event_names=())
        properties = snapshot.properties if snapshot is not None else {}
        zone_value = properties.get(input.timezone_property) if input.timezone_property else None
        valid = None
        if isinstance(zone_value, str) and zone_value.strip():
            try:
                zoneinfo.ZoneInfo(zone_value.strip())
                valid = zone_value.strip()
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                valid = None
        return TimingResult(
            timezone=valid,
            timezone_value=zone_value,
            date_value=properties.get(input.date_property) if input.date_property else None,
        )

    @activity.defn(name="record_step")
    def record_step(self, input: StepInput) -> None:
        with self.sessions.begin() as session:
            write_steps(session, [input])

    @activity.defn(name="finish_enrollment")
    def finish_enrollment(self, input: FinishInput) -> None:
        with self.sessions.begin() as session:
            write_finish(session, input)

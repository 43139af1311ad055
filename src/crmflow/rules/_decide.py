"""What one record change calls for, decided without I/O: which workflows enroll the record,
which enrollments it leaves and why. Pure, so its cost is measurable on its own
(bench/trigger_evaluation.py) and its rules testable without a server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from crmflow.conditions import RecordSnapshot, evaluate
from crmflow.definitions import (
    ConditionReads,
    WaitForEventAction,
    WorkflowDefinition,
    condition_reads,
)

from ._eligibility import refusal

CREATED, UPDATED, DELETED = "created", "updated", "deleted"
LISTED, UNLISTED, EVENT = "listed", "unlisted", "event"
# Time alone changed a time-relative term of one workflow's conditions (the time sweep).
TIME = "time"
_JUST_BEFORE = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Change:
    """A record change as the dispatcher sees it (a `record_changes` row)."""

    id: int
    object_type: str
    record_id: str
    kind: str
    properties: tuple[str, ...] = ()
    before: Mapping[str, object] = field(default_factory=dict)
    list_name: str | None = None
    event_name: str | None = None
    event_id: int | None = None
    # A `time` change: the workflow it is for, the instant its terms changed, and the events
    # whose terms did (`properties`: the properties whose terms did).
    workflow_key: str | None = None
    at: datetime | None = None
    events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Trigger:
    """One workflow version as triggers see it, with what can change each of its answers."""

    key: str
    version: int
    definition: WorkflowDefinition
    active: bool
    activated_change_id: int
    enter: ConditionReads  # criteria + reenroll triggers: may enroll (criteria workflows only)
    leave: ConditionReads  # goal, unenroll_when, criteria when unmet unenrolls, suppression
    waits: frozenset[str] = frozenset()  # events its wait_for_event actions wait for
    # The event each of its wait_for_event actions waits for, by action id.
    wait_actions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        definition: WorkflowDefinition,
        version: int,
        *,
        active: bool,
        activated_change_id: int,
    ) -> Trigger:
        enrollment, settings = definition.enrollment, definition.settings
        enter = ConditionReads()
        if enrollment.trigger == "criteria" and enrollment.criteria is not None:
            enter = condition_reads(enrollment.criteria)
            if (re := enrollment.reenroll) is not None:
                enter |= ConditionReads(
                    frozenset(re.properties), frozenset(re.lists), frozenset(re.events)
                )
        leave = ConditionReads(lists=frozenset(settings.suppression_lists))
        if definition.goal is not None:
            leave |= condition_reads(definition.goal.criteria)
        if settings.unenroll_when is not None:
            leave |= condition_reads(settings.unenroll_when)
        if settings.unenroll_when_criteria_unmet and enrollment.criteria is not None:
            leave |= condition_reads(enrollment.criteria)
        # A running enrollment may wait for these: their events reach it like exit rules do.
        wait_actions = {
            action.id: action.event
            for action in definition.actions
            if isinstance(action, WaitForEventAction)
        }
        waits = frozenset(wait_actions.values())
        leave |= ConditionReads(events=waits)
        return cls(
            definition.key,
            version,
            definition,
            active,
            activated_change_id,
            enter,
            leave,
            waits,
            wait_actions,
        )


@dataclass(frozen=True, slots=True)
class ActiveEnrollment:
    """A running or paused enrollment of the changed record."""

    id: int
    key: str
    version: int
    temporal_workflow_id: str


@dataclass(frozen=True, slots=True)
class Enroll:
    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Leave:
    enrollment: ActiveEnrollment
    status: str  # "goal_met" or "unenrolled"
    reason: str


Decision = Enroll | Leave


def reads_change(reads: ConditionReads, change: Change) -> bool:
    """Can this change alter an answer that reads these names?"""
    if change.kind in (CREATED, UPDATED):
        return not reads.properties.isdisjoint(change.properties)
    if change.kind in (LISTED, UNLISTED):
        return change.list_name in reads.lists
    if change.kind == EVENT:
        return change.event_name in reads.events
    return False


def snapshot_before(change: Change, now: RecordSnapshot) -> RecordSnapshot | None:
    """The record as it was just before the change (None: it did not exist)."""
    if change.kind == CREATED:
        return None
    if change.kind == UPDATED:
        properties = dict(now.properties)
        for name in change.properties:
            value = change.before.get(name)
            if value is None:
                properties.pop(name, None)
            else:
                properties[name] = value
        return now.model_copy(update={"properties": properties})
    if change.kind == LISTED:
        return now.model_copy(update={"lists": now.lists - {change.list_name}})
    if change.kind == UNLISTED:
        return now.model_copy(update={"lists": now.lists | {change.list_name}})
    if change.kind == EVENT:
        # The new event is the last one of its name: drop one occurrence of it.
        events = list(now.events)
        for index in range(len(events) - 1, -1, -1):
            if events[index].name == change.event_name:
                del events[index]
                break
        return now.model_copy(update={"events": events})
    return now


def reenroll_fired(definition: WorkflowDefinition, change: Change) -> str | None:
    re = definition.enrollment.reenroll
    if re is None:
        return None
    if change.kind == UPDATED and (changed := set(re.properties) & set(change.properties)):
        return f"re-enrolled: {', '.join(sorted(changed))} changed"
    if change.kind == EVENT and change.event_name in re.events:
        return f"re-enrolled: event {change.event_name}"
    if change.kind == LISTED and change.list_name in re.lists:
        return f"re-enrolled: joined list {change.list_name}"
    if change.kind == TIME:
        # The property changed (or the event happened) earlier, and time has now made the
        # criteria match: the re-enrollment trigger fires with a delay.
        names = sorted(set(re.properties) & set(change.properties))
        names += [f"event {e}" for e in sorted(set(re.events) & set(change.events))]
        if names:
            return f"re-enrolled: criteria met as time passed ({', '.join(names)})"
    return None


def decide(
    change: Change,
    snapshot: RecordSnapshot | None,
    *,
    enter: Sequence[Trigger],
    leave: Sequence[tuple[Trigger, ActiveEnrollment]],
    ever_enrolled: frozenset[str],
    now: datetime,
) -> list[Decision]:
    """`enter`: criteria workflows the change may enroll the record in; `leave`: the record's
    active enrollments whose exit rules read what changed; `ever_enrolled`: keys of the
    workflows the record was ever enrolled in."""
    decisions: list[Decision] = []
    if change.kind == TIME and change.at is not None:
        # As if the record changed at that instant: judged now, and never before it (a
        # dispatcher whose clock is behind the sweep's must not find the term unchanged).
        now = max(now, change.at)
    if change.kind == DELETED or snapshot is None:
        return [Leave(e, "unenrolled", "record deleted") for _, e in leave]
    enrolled_in = {e.key for _, e in leave}
    for trigger, enrollment in leave:
        settings, definition = trigger.definition.settings, trigger.definition
        if change.kind == LISTED and change.list_name in settings.suppression_lists:
            decisions.append(
                Leave(enrollment, "unenrolled", f"joined suppression list {change.list_name}")
            )
        elif definition.goal is not None and evaluate(definition.goal.criteria, snapshot, now=now):
            decisions.append(Leave(enrollment, "goal_met", "goal met"))
        elif settings.unenroll_when is not None and evaluate(
            settings.unenroll_when, snapshot, now=now
        ):
            decisions.append(Leave(enrollment, "unenrolled", "unenroll_when matched"))
        elif (
            settings.unenroll_when_criteria_unmet
            and definition.enrollment.criteria is not None
            and not evaluate(definition.enrollment.criteria, snapshot, now=now)
        ):
            decisions.append(Leave(enrollment, "unenrolled", "enrollment criteria no longer met"))
    before: list[RecordSnapshot | None] = []  # the record before the change, when first needed
    for trigger in enter:
        definition = trigger.definition
        criteria = definition.enrollment.criteria
        if (
            not trigger.active
            or change.id <= trigger.activated_change_id
            or trigger.key in enrolled_in
            or criteria is None
            or not evaluate(criteria, snapshot, now=now)
            or refusal(definition, snapshot, now=now) is not None
        ):
            continue
        reason = reenroll_fired(definition, change)
        if change.kind == TIME:
            # Time alone enrolls a record only when it came to match: it did not match just
            # before the instant, with the record as it is.
            assert change.at is not None
            if evaluate(criteria, snapshot, now=change.at - _JUST_BEFORE):
                continue
            if reason is None:
                if trigger.key in ever_enrolled:
                    continue
                reason = "criteria met as time passed"
        elif reason is None:
            if trigger.key in ever_enrolled:
                continue  # enrolled before, and no re-enrollment trigger fired
            if not before:
                before.append(snapshot_before(change, snapshot))
            if before[0] is not None and evaluate(criteria, before[0], now=now):
                continue  # it matched already: it did not just come to match
            reason = "criteria met"
        decisions.append(Enroll(trigger.key, reason))
    return decisions

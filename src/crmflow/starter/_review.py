"""Who a workflow enrolls, seen from the store: `review` counts the records that match now,
activation with enroll_existing enrolls them, and `history` says why one record is or is not
enrolled. The rules are those of automatic enrollment (SPEC §3, `crmflow.triggers.decide`);
this module only reads them back, in SQL for many records and in Python for one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import not_
from sqlalchemy.orm import Session

from crmflow.conditions import RecordSnapshot, compile_condition, explain, select_matching
from crmflow.definitions import (
    AllCondition,
    AnyCondition,
    Condition,
    InListFilter,
    NotCondition,
    NotInListFilter,
    Reenroll,
    WorkflowDefinition,
)
from crmflow.store import (
    ACTIVE_STATUSES,
    Enrollment,
    EnrollmentRepository,
    ListRepository,
    RecordChange,
    RecordRepository,
    StoreError,
    Workflow,
    WorkflowRepository,
    load_snapshot,
)
from crmflow.triggers import Outcome, enroll_selected

from ._app import App
from ._history_time import coming_by_time, review_note, time_enrollment
from .services import UserError, load_version, starter, utcnow

# ---------------------------------------------------------------- counting who would enroll


@dataclass(frozen=True)
class Tally:
    """The records that match the criteria now. Each one is counted once: under the first
    reason it would not enroll (in the order the starter checks them), else `would_enroll`."""

    matching: int
    would_enroll: int
    suppressed: int
    goal_met: int
    enrolled_now: int
    # Criteria workflows only: there, a record enrolls again only when a re-enrollment trigger
    # fires, and activation is not one. A scheduled run enrolls such records again (None).
    enrolled_before: int | None


def enrollable(definition: WorkflowDefinition) -> Condition:
    """Who may enroll now, as one condition: the criteria, not the goal, in no suppression list."""
    criteria = definition.enrollment.criteria
    assert criteria is not None, "only workflows with criteria select records"
    parts: list[Condition] = [criteria]
    if definition.goal is not None:
        parts.append(NotCondition(not_=definition.goal.criteria))
    parts += [NotInListFilter(not_in_list=name) for name in definition.settings.suppression_lists]
    return parts[0] if len(parts) == 1 else AllCondition(all=parts)


def tally(session: Session, definition: WorkflowDefinition, *, now: datetime) -> Tally:
    """One query over the records, however many there are."""
    criteria = definition.enrollment.criteria
    assert criteria is not None, "only workflows with criteria select records"
    compiled = partial(compile_condition, now=now, dialect_name=session.get_bind().dialect.name)
    key, lists = definition.key, definition.settings.suppression_lists
    buckets = []
    if lists:
        suppressed = AnyCondition(any=[InListFilter(in_list=name) for name in lists])
        buckets.append(("suppressed", compiled(suppressed)))
    if definition.goal is not None:
        buckets.append(("goal_met", compiled(definition.goal.criteria)))
    enrolled_now = EnrollmentRepository.enrolled_clause(key, statuses=ACTIVE_STATUSES)
    buckets.append(("enrolled_now", enrolled_now))
    once = definition.enrollment.trigger == "criteria"
    if once:
        buckets.append(("enrolled_before", EnrollmentRepository.enrolled_clause(key)))
    counts = RecordRepository(session).tally(
        definition.object_type, compiled(criteria), buckets, otherwise="would_enroll"
    )
    return Tally(
        matching=sum(counts.values()),
        would_enroll=counts["would_enroll"],
        suppressed=counts.get("suppressed", 0),
        goal_met=counts.get("goal_met", 0),
        enrolled_now=counts["enrolled_now"],
        enrolled_before=counts["enrolled_before"] if once else None,
    )


# ---------------------------------------------------------------- review


@dataclass(frozen=True)
class Review:
    workflow: str
    version: int
    trigger: str
    active: bool
    tally: Tally | None  # None: a manual workflow has no criteria
    message: str
    records: list[str] | None = None  # with --list or --save-list
    saved_list: str | None = None
    saved: int = 0  # records added to the saved list (the others were members already)

    def as_json(self) -> dict[str, Any]:
        counts = asdict(self.tally) if self.tally else {f.name: None for f in fields(Tally)}
        data = {
            "workflow": self.workflow,
            "version": self.version,
            "trigger": self.trigger,
            "active": self.active,
            **counts,
            "message": self.message,
        }
        if self.records is not None:
            data["records"] = self.records
        if self.saved_list is not None:
            data["saved_list"] = {"name": self.saved_list, "added": self.saved}
        return data


def review(
    app: App, key: str, *, list_records: bool = False, save_list: str | None = None
) -> Review:
    """How many records match the criteria now, how many activation with enroll_existing would
    enroll, and what activation does; optionally which records, saved as a static list."""
    definition, version = load_version(app, key)
    trigger, criteria, now = definition.enrollment.trigger, definition.enrollment.criteria, utcnow()
    if criteria is None and (list_records or save_list):
        raise UserError(f"workflow '{key}' is manual: it has no criteria to select records by")
    with app.sessions.begin() as session:
        active = WorkflowRepository(session).require(key).active
        counts = None if criteria is None else tally(session, definition, now=now)
        message = _what_activation_does(definition, counts, active=active)
        if trigger == "criteria" and (coming := coming_by_time(session, definition, now=now)):
            message = f"{message}; {review_note(coming)}"
        if criteria is None or not (list_records or save_list):
            return Review(key, version, trigger, active, counts, message)
        matching = select_matching(
            criteria,
            object_type=definition.object_type,
            now=now,
            dialect_name=session.get_bind().dialect.name,
        )
        records = RecordRepository(session).matching_ids(matching)
        added = 0
        if save_list:
            lists = ListRepository(session)
            try:
                added = sum(
                    lists.add(save_list, definition.object_type, record_id, now=now)
                    for record_id in records
                )
            except StoreError as exc:
                raise UserError(str(exc)) from None
    return Review(
        key,
        version,
        trigger,
        active,
        counts,
        message,
        records if list_records else None,
        save_list,
        added,
    )


def _what_activation_does(
    definition: WorkflowDefinition, counts: Tally | None, *, active: bool
) -> str:
    key = definition.key
    if counts is None:
        return f"no automatic enrollment (manual trigger): enroll with `crmflow enroll {key} ID...`"
    n = counts.would_enroll
    if definition.enrollment.trigger == "schedule":
        when = "each scheduled run" if active else "once activated, each scheduled run"
        return f"{when} enrolls the records that match at that moment ({n} would now)"
    if active:
        return (
            f"the workflow is active: it enrolls records as they come to match; "
            f"`crmflow activate {key} --enroll-existing` would also enroll these {n} record(s) now"
        )
    if definition.enrollment.enroll_existing:
        return (
            f"activating enrolls these {n} record(s) now (enroll_existing is on) and "
            "records that come to match from then on"
        )
    return (
        "activating enrolls records that come to match from now on; "
        f"with --enroll-existing it also enrolls these {n} record(s) now"
    )


# ---------------------------------------------------------------- enroll existing records


@dataclass
class ExistingEnrollment:
    """What enrolling the existing records did."""

    matching: int = 0  # records matching the criteria when it began
    enrolled: int = 0
    # Why the other matching records were not enrolled: the tally's reasons, and `refused` for
    # those the starter turned away (enrolled or changed since they were selected).
    skipped: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (record id, error)

    def as_json(self) -> dict[str, Any]:
        return {
            "matching": self.matching,
            "enrolled": self.enrolled,
            "skipped": sum(self.skipped.values()),
            "skipped_because": self.skipped,
            "failed": len(self.failures),
            "failures": [{"record_id": r, "message": m} for r, m in self.failures],
        }


Progress = Callable[[int, int], None]  # (records done, records to do)


async def enroll_existing(
    app: App, definition: WorkflowDefinition, version: int, *, on_progress: Progress | None = None
) -> ExistingEnrollment:
    """Enroll the records that match now and may enroll: selected in SQL a page at a time,
    started a bounded number at once. Run it after activation, so that a record that comes to
    match meanwhile is enrolled by one or the other (the store refuses a second enrollment)."""
    now, key = utcnow(), definition.key
    with app.sessions() as session:
        counts = tally(session, definition, now=now)
        dialect_name = session.get_bind().dialect.name
    excluded = {
        name: count
        for name in ("suppressed", "goal_met", "enrolled_now", "enrolled_before")
        if (count := getattr(counts, name))
    }
    result = ExistingEnrollment(matching=counts.matching, skipped=excluded)
    candidates = select_matching(
        enrollable(definition),
        object_type=definition.object_type,
        now=now,
        dialect_name=dialect_name,
    ).where(not_(EnrollmentRepository.enrolled_clause(key)))
    done, total = 0, counts.would_enroll

    def record(record_id: str, outcome: Outcome) -> None:
        nonlocal done
        if isinstance(outcome, Exception):
            result.failures.append((record_id, f"{type(outcome).__name__}: {outcome}"))
        elif outcome.ok:
            result.enrolled += 1
        else:
            result.skipped["refused"] = result.skipped.get("refused", 0) + 1
        done += 1
        if on_progress:
            on_progress(done, max(total, done))

    if on_progress:
        on_progress(0, total)
    await enroll_selected(
        app.sessions,
        await starter(app),
        definition,
        version,
        candidates,
        source="existing",
        on_outcome=record,
    )
    return result


# ---------------------------------------------------------------- why (not)


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
    key, enrollment, settings = definition.key, definition.enrollment, definition.settings
    current = next((e for e in enrollments if e.status in ACTIVE_STATUSES), None)
    if current is not None:
        held = " while the workflow is inactive" if current.status == "paused" else ""
        return Explanation(
            "enrolled", f"enrolled now: {current.status}{held}, on version {current.version}"
        )
    if snapshot is None:
        return Explanation("deleted", f"the {definition.object_type} was deleted")
    inactive = "" if workflow.active else " (the workflow is inactive)"
    suppressed = sorted(snapshot.lists & set(settings.suppression_lists))
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

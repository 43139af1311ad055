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

from crmflow.activities.ports import Outcome
from crmflow.definitions import (
    ACTIVE_STATUSES,
    WorkflowDefinition,
)
from crmflow.rules import enrollable, suppression
from crmflow.store import (
    EnrollmentRepository,
    ListRepository,
    RecordRepository,
    StoreError,
    WorkflowRepository,
    compile_condition,
    select_matching,
)

from ._app import App
from ._base import UserError, load_version, starter, utcnow
from .history_time import coming_by_time, review_note

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


def tally(session: Session, definition: WorkflowDefinition, *, now: datetime) -> Tally:
    """One query over the records, however many there are."""
    criteria = definition.enrollment.criteria
    assert criteria is not None, "only workflows with criteria select records"
    compiled = partial(compile_condition, now=now, dialect_name=session.get_bind().dialect.name)
    key = definition.key
    buckets = []
    if (suppressed := suppression(definition)) is not None:
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
    await (await starter(app)).enroll_selected(
        definition,
        version,
        candidates,
        source="existing",
        on_outcome=record,
    )
    return result

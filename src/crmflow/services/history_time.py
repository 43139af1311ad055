"""What time alone will do for a record, as `history` (why-not) and `review` say it: when its
enrollment criteria turn true by time (`next_change`), and whether the time sweep then enrolls
it. The sweep's rules (`crmflow.triggers.decide` for a "time passed" change), read back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, not_
from sqlalchemy.orm import Session

from crmflow.activities.config import ConfigError, time_sweep_interval
from crmflow.activities.time_sweep import SWEEP_INTERVAL
from crmflow.conditions import (
    RecordSnapshot,
    describe_condition,
    evaluate,
    next_change,
    time_terms,
    to_micros,
)
from crmflow.definitions import WorkflowDefinition, format_duration
from crmflow.store import Enrollment, RecordRepository, Workflow, compile_condition

# How far ahead `review` counts the records that time alone will make match.
REVIEW_HORIZON = timedelta(hours=24)


def _delay() -> str:
    """The sweep's interval as this process's environment sets it (a worker's may differ)."""
    try:
        return format_duration(time_sweep_interval(os.environ, SWEEP_INTERVAL))
    except ConfigError:
        return format_duration(SWEEP_INTERVAL)


def time_enrollment(
    definition: WorkflowDefinition,
    workflow: Workflow,
    enrollments: Sequence[Enrollment],
    snapshot: RecordSnapshot,
    *,
    now: datetime,
) -> str | None:
    """For a record the criteria do not match now: when time alone makes them match, and what
    happens then; None when time alone never does (with the record as it is)."""
    criteria = definition.enrollment.criteria
    if definition.enrollment.trigger != "criteria" or criteria is None:
        return None
    moment = next_change(criteria, snapshot, now)
    if moment is None:
        return None
    instant = to_micros(moment)
    terms = [t for t in time_terms(criteria) if instant in t.instants(snapshot)]
    words = " and ".join(f"'{describe_condition(t.filter)}'" for t in terms) or "the criteria"
    when = f"{words} turns true at {moment.isoformat(timespec='seconds')}"
    if not workflow.active:
        return f"{when}; the workflow is inactive: it enrolls nobody then"
    suppressed = sorted(snapshot.lists & set(definition.settings.suppression_lists))
    if suppressed:
        return f"{when}, but it is suppressed (member of {', '.join(suppressed)})"
    if definition.goal is not None and evaluate(definition.goal.criteria, snapshot, now=moment):
        return f"{when}, but the goal will be met then: it will not enroll"
    reenroll = definition.enrollment.reenroll
    again = reenroll is not None and any(t.name in reenroll.properties for t in terms)
    if enrollments and not again:
        return f"{when}, but it was enrolled before and re-enrollment is off"
    return f"will enroll when {when} (the time sweep acts within {_delay()} of that)"


def coming_by_time(session: Session, definition: WorkflowDefinition, *, now: datetime) -> int:
    """How many records that do not match the criteria now will match them in REVIEW_HORIZON
    with no change to them (one query)."""
    criteria = definition.enrollment.criteria
    if criteria is None or not time_terms(criteria):
        return 0
    dialect = session.get_bind().dialect.name
    later = compile_condition(criteria, now=now + REVIEW_HORIZON, dialect_name=dialect)
    clause = and_(not_(compile_condition(criteria, now=now, dialect_name=dialect)), later)
    counts = RecordRepository(session).tally(definition.object_type, clause, [], otherwise="n")
    return counts.get("n", 0)


def review_note(count: int) -> str:
    hours = int(REVIEW_HORIZON.total_seconds() // 3600)
    return (
        f"as time passes, {count} more record(s) come to match within {hours} h with no change "
        f"to them: each enrolls within {_delay()} of that moment"
    )

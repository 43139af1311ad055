"""Who may enroll at all, whatever the trigger: the one rule the dispatcher, manual enrollment,
scheduled runs, review and why-not share, on one record (`refusal`, `suppressing_lists`) and as
conditions the store selects with (`suppression`, `enrollable`)."""

from __future__ import annotations

from datetime import datetime

from crmflow.conditions import RecordSnapshot, evaluate
from crmflow.definitions import (
    AllCondition,
    AnyCondition,
    Condition,
    InListFilter,
    NotCondition,
    NotInListFilter,
    WorkflowDefinition,
)


def suppressing_lists(definition: WorkflowDefinition, snapshot: RecordSnapshot) -> list[str]:
    """The workflow's suppression lists the record is in (sorted): it never enrolls while in
    one."""
    return sorted(snapshot.lists & set(definition.settings.suppression_lists))


def refusal(
    definition: WorkflowDefinition, snapshot: RecordSnapshot, *, now: datetime
) -> str | None:
    """Why the record may not enroll at all (whatever the trigger), or None: a suppression
    list, then the goal met already."""
    suppressed = suppressing_lists(definition, snapshot)
    if suppressed:
        return f"suppressed: member of {', '.join(suppressed)}"
    if definition.goal is not None and evaluate(definition.goal.criteria, snapshot, now=now):
        return "goal already met"
    return None


def suppression(definition: WorkflowDefinition) -> Condition | None:
    """In any of the workflow's suppression lists (None: it has none)."""
    lists = definition.settings.suppression_lists
    return AnyCondition(any=[InListFilter(in_list=name) for name in lists]) if lists else None


def enrollable(definition: WorkflowDefinition) -> Condition:
    """Who may enroll now, as one condition: the criteria, not the goal, in no suppression
    list."""
    criteria = definition.enrollment.criteria
    assert criteria is not None, "only workflows with criteria select records"
    parts: list[Condition] = [criteria]
    if definition.goal is not None:
        parts.append(NotCondition(not_=definition.goal.criteria))
    parts += [NotInListFilter(not_in_list=name) for name in definition.settings.suppression_lists]
    return parts[0] if len(parts) == 1 else AllCondition(all=parts)

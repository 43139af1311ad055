"""Who may enroll at all, whatever the trigger: the one rule the dispatcher, manual enrollment,
scheduled runs, review and why-not share."""

from __future__ import annotations

from datetime import datetime

from crmflow.conditions import RecordSnapshot, evaluate
from crmflow.definitions import WorkflowDefinition


def refusal(
    definition: WorkflowDefinition, snapshot: RecordSnapshot, *, now: datetime
) -> str | None:
    """Why the record may not enroll at all (whatever the trigger), or None."""
    suppressed = sorted(snapshot.lists & set(definition.settings.suppression_lists))
    if suppressed:
        return f"suppressed: member of {', '.join(suppressed)}"
    if definition.goal is not None and evaluate(definition.goal.criteria, snapshot, now=now):
        return "goal already met"
    return None

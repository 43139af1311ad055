"""Evaluate a condition on one record in Python, and explain the outcome leaf by leaf.

No I/O and no SQLAlchemy: deterministic given (condition, snapshot, now), so workflows may call
it inside the Temporal sandbox.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from crmflow.definitions import (
    AllCondition,
    AnyCondition,
    Condition,
    EventFilter,
    InListFilter,
    NotCondition,
    NotInListFilter,
    PropertyFilter,
    PropertyOp,
    format_duration,
)

from ._snapshot import RecordSnapshot
from .plans import EventPlan, plan_event, plan_property


def evaluate(condition: Condition, snapshot: RecordSnapshot, *, now: datetime) -> bool:
    """Whether the record matches the condition at `now` (an aware datetime)."""
    if isinstance(condition, AllCondition):
        return all(evaluate(child, snapshot, now=now) for child in condition.all)
    if isinstance(condition, AnyCondition):
        return any(evaluate(child, snapshot, now=now) for child in condition.any)
    if isinstance(condition, NotCondition):
        return not evaluate(condition.not_, snapshot, now=now)
    if isinstance(condition, PropertyFilter):
        return plan_property(condition, now=now).holds(snapshot.properties)
    if isinstance(condition, InListFilter):
        return condition.in_list in snapshot.lists
    if isinstance(condition, NotInListFilter):
        return condition.not_in_list not in snapshot.lists
    if isinstance(condition, EventFilter):
        plan = plan_event(condition, now=now)
        return _count_events(plan, snapshot) >= plan.min_count
    raise TypeError(f"not a condition: {condition!r}")


def _count_events(plan: EventPlan, snapshot: RecordSnapshot) -> int:
    return sum(plan.matches(e.name, e.occurred_at, e.properties) for e in snapshot.events)


class ConditionExplanation(BaseModel):
    """Why a condition holds or not: one node per condition node, each with a one-line text."""

    model_config = ConfigDict(frozen=True)

    holds: bool = Field(description="The outcome of this node")
    text: str = Field(description='e.g. `lifecycle_stage eq "lead": false (value is "customer")`')
    children: tuple[ConditionExplanation, ...] = Field(default=(), description="Sub-conditions")

    def render(self, indent: str = "  ") -> str:
        """The tree as indented lines."""
        lines: list[str] = []

        def walk(node: ConditionExplanation, depth: int) -> None:
            lines.append(indent * depth + node.text)
            for child in node.children:
                walk(child, depth + 1)

        walk(self, 0)
        return "\n".join(lines)


def explain(
    condition: Condition, snapshot: RecordSnapshot, *, now: datetime
) -> ConditionExplanation:
    """Evaluate every node (no short-circuit) and say why each leaf held or failed."""
    if isinstance(condition, AllCondition | AnyCondition | NotCondition):
        if isinstance(condition, AllCondition):
            word, children = "all", condition.all
        elif isinstance(condition, AnyCondition):
            word, children = "any", condition.any
        else:
            word, children = "not", [condition.not_]
        parts = tuple(explain(child, snapshot, now=now) for child in children)
        results = [part.holds for part in parts]
        holds = all(results) if word == "all" else any(results) if word == "any" else not results[0]
        return ConditionExplanation(holds=holds, text=f"{word}: {_yes(holds)}", children=parts)
    holds = evaluate(condition, snapshot, now=now)
    if isinstance(condition, PropertyFilter):
        operand = (
            ""
            if condition.op in (PropertyOp.KNOWN, PropertyOp.UNKNOWN)
            else (" " + _show(condition.value))
        )
        value = snapshot.properties.get(condition.property)
        found = "no value" if value is None else f"value is {_show(value)}"
        text = f"{condition.property} {condition.op.value}{operand}: {_yes(holds)} ({found})"
    elif isinstance(condition, InListFilter):
        text = f"in list {condition.in_list}: {_yes(holds)}"
    elif isinstance(condition, NotInListFilter):
        text = f"not in list {condition.not_in_list}: {_yes(holds)}"
    else:
        plan = plan_event(condition, now=now)
        count = _count_events(plan, snapshot)
        text = f"event {condition.event}"
        if condition.where:
            text += f" where {_show(condition.where)}"
        if condition.within is not None:
            text += f" within {format_duration(condition.within)}"
        if condition.min_count != 1:
            text += f" at least {condition.min_count} times"
        text += f": {_yes(holds)} ({count} matching event{'' if count == 1 else 's'})"
    return ConditionExplanation(holds=holds, text=text)


def _yes(holds: bool) -> str:
    return "true" if holds else "false"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."

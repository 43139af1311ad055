"""Activities that change the enrolled record: properties and list membership."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from crmflow.definitions import (
    AddToListAction,
    ClearPropertyAction,
    CopyPropertyAction,
    CreateRecordAction,
    IncrementPropertyAction,
    RemoveFromListAction,
    SetPropertyAction,
)
from crmflow.limits import MAX_NUMBER
from crmflow.store import AssociationRepository, ListRepository, RecordRepository, StoreError
from crmflow.templates import TemplateProblem

from ._once import run_once
from ._templating import render_for
from .models import ActionInput, ActionResult, EnrollmentContext


def _text(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else f'"{value}"'


def _short(number: int | float) -> str:
    text = str(number)
    return text if len(text) <= 24 else f"{float(number):.6g}"


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return int(number) if number.is_integer() and "." not in value else number
    return None


def created_record_id(ctx: EnrollmentContext, action_id: str) -> str:
    """Deterministic per (enrollment, action): a retry can only find the record it made."""
    return f"{ctx.workflow_key}-{ctx.enrollment_id}-{action_id}"


class RecordActivities:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @activity.defn(name="update_record")
    def update_record(self, input: ActionInput) -> ActionResult:
        return run_once(
            self.sessions, input, lambda session: _refusal_fails(session, self._apply, input)
        )

    @activity.defn(name="create_record")
    def create_record(self, input: ActionInput) -> ActionResult:
        return run_once(
            self.sessions, input, lambda session: _refusal_fails(session, self._create, input)
        )

    def _create(self, session: Session, input: ActionInput) -> ActionResult:
        ctx, action, now = input.context, input.action, input.at
        if not isinstance(action, CreateRecordAction):
            raise TypeError(f"create_record cannot run a {action.type} action")
        records = RecordRepository(session)
        enrolled = records.get(ctx.object_type, ctx.record_id)
        if enrolled is None:
            return ActionResult(
                outcome=f"failed: {ctx.object_type} '{ctx.record_id}' no longer exists", failed=True
            )
        values: dict[str, Any] = {}
        for name, value in action.properties.items():
            if isinstance(value, str):
                try:
                    value = render_for(ctx, value, enrolled.properties)
                except TemplateProblem as exc:
                    return ActionResult(outcome=f"failed: {exc}", failed=True)
            values[name] = value
        new_id = created_record_id(ctx, action.id)
        # Through the repository, so the change feed sees the new record (it may enroll).
        records.upsert(action.object_type, new_id, values, now=now)
        AssociationRepository(session).associate(
            ctx.object_type, ctx.record_id, action.object_type, new_id, now=now
        )
        return ActionResult(
            outcome=f"created {action.object_type} '{new_id}'",
            detail={"object_type": action.object_type, "id": new_id},
        )

    def _apply(self, session: Session, input: ActionInput) -> ActionResult:
        ctx, action, now = input.context, input.action, input.at
        records = RecordRepository(session)
        record = records.get(ctx.object_type, ctx.record_id, for_update=True)
        if record is None:
            return ActionResult(
                outcome=f"failed: {ctx.object_type} '{ctx.record_id}' no longer exists", failed=True
            )
        props = record.properties
        match action:
            case SetPropertyAction():
                value = action.value
                if isinstance(value, str):
                    try:
                        value = render_for(ctx, value, props)
                    except TemplateProblem as exc:
                        return ActionResult(outcome=f"failed: {exc}", failed=True)
                records.update(ctx.object_type, ctx.record_id, {action.property: value}, now=now)
                return ActionResult(
                    outcome=f"{action.property} = {_text(value)}",
                    detail={
                        "property": action.property,
                        "before": props.get(action.property),
                        "after": value,
                    },
                )
            case CopyPropertyAction():
                value = props.get(action.from_)
                records.update(ctx.object_type, ctx.record_id, {action.to: value}, now=now)
                return ActionResult(outcome=f"{action.to} = {_text(value)} (from {action.from_})")
            case ClearPropertyAction():
                before = props.get(action.property)
                records.update(ctx.object_type, ctx.record_id, {action.property: None}, now=now)
                return ActionResult(outcome=f"{action.property} cleared", detail={"before": before})
            case IncrementPropertyAction():
                current = props.get(action.property)
                number = 0 if current is None else _as_number(current)
                if number is None:
                    return ActionResult(
                        outcome=f"failed: {action.property} is {_text(current)}, not a number",
                        failed=True,
                    )
                after = number + action.by
                if not abs(after) <= MAX_NUMBER:  # also NaN: the store holds JSON numbers only
                    return ActionResult(
                        outcome=f"failed: {action.property} + {_short(action.by)} is out of range",
                        failed=True,
                    )
                records.update(ctx.object_type, ctx.record_id, {action.property: after}, now=now)
                return ActionResult(
                    outcome=f"{action.property}: {_text(current)} -> {after}",
                    detail={"before": current, "after": after},
                )
            case AddToListAction():
                try:
                    added = ListRepository(session).add(
                        action.list, ctx.object_type, ctx.record_id, now=now
                    )
                except StoreError as exc:
                    return ActionResult(outcome=f"failed: {exc}", failed=True)
                return ActionResult(
                    outcome=f"added to list {action.list}"
                    if added
                    else f"already in list {action.list}"
                )
            case RemoveFromListAction():
                removed = ListRepository(session).remove(
                    action.list, ctx.object_type, ctx.record_id, now=now
                )
                return ActionResult(
                    outcome=f"removed from list {action.list}"
                    if removed
                    else f"was not in list {action.list}"
                )
        raise TypeError(f"update_record cannot run a {action.type} action")


def _refusal_fails(
    session: Session, effect: Callable[[Session, ActionInput], ActionResult], input: ActionInput
) -> ActionResult:
    """A value the store refuses (a rendered text over its limit, a record grown past 1 MiB, a
    name it cannot take) is a permanent failure of the step, not a day of retries: nothing of
    the effect is kept (a savepoint), the failure is stored as the step's outcome."""
    try:
        with session.begin_nested():
            return effect(session, input)
    except StoreError as exc:
        return ActionResult(outcome=f"failed: {exc}", failed=True)

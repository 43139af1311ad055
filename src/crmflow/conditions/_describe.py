"""A condition in words, for pictures and listings: `lifecycle_stage = "lead" and seats > 10`.

Pure text: no evaluation, no clock. The words follow the condition tree exactly (nothing is
simplified away), with parentheses wherever `and` and `or` meet, so the text reads one way only.
"""

from __future__ import annotations

import json
import re
from typing import Any

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
    parse_duration,
    parse_iso_date,
)

ELLIPSIS = "…"

_EQUALITY = {PropertyOp.EQ: "=", PropertyOp.NEQ: "!="}
_ORDER = {
    PropertyOp.GT: ">",
    PropertyOp.GTE: ">=",
    PropertyOp.LT: "<",
    PropertyOp.LTE: "<=",
}
_WORDS = {
    PropertyOp.CONTAINS: "contains",
    PropertyOp.NOT_CONTAINS: "does not contain",
    PropertyOp.STARTS_WITH: "starts with",
    PropertyOp.ENDS_WITH: "ends with",
}
# A list, event or `where` key written bare; anything else (spaces, quotes, brackets) is quoted.
_BARE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@/-]*$")


def describe_condition(condition: Condition, *, limit: int | None = None) -> str:
    """The condition in words; with `limit`, clipped to that many characters (ending in …).

    Text values are quoted (`plan = "gold"`), numbers, booleans and dates are not; names of
    lists and events are quoted when they are not a plain word (`in list "do not contact"`).
    Whitespace inside values is shown as single spaces, so the text is always one line.
    """
    return clip(_describe(condition), limit)


def clip(text: str, limit: int | None) -> str:
    """`text` on one line (runs of whitespace made one space), at most `limit` characters."""
    text = " ".join(text.split())
    if limit is None or len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + ELLIPSIS


def _describe(condition: Condition) -> str:
    match condition:
        case AllCondition():
            return " and ".join(_operand(child) for child in condition.all)
        case AnyCondition():
            return " or ".join(_operand(child) for child in condition.any)
        case NotCondition():
            return _negated(condition.not_)
        case PropertyFilter():
            return _property(condition)
        case InListFilter():
            return f"in list {_name(condition.in_list)}"
        case NotInListFilter():
            return f"not in list {_name(condition.not_in_list)}"
        case EventFilter():
            return _event(condition, done=True)
    raise TypeError(f"not a condition: {condition!r}")


def _operand(child: Condition) -> str:
    """A child of `all`/`any`: parenthesised when it is itself a list of several."""
    if isinstance(child, AllCondition) and len(child.all) > 1:
        return f"({_describe(child)})"
    if isinstance(child, AnyCondition) and len(child.any) > 1:
        return f"({_describe(child)})"
    return _describe(child)


def _negated(child: Condition) -> str:
    if isinstance(child, EventFilter):
        return _event(child, done=False)
    if isinstance(child, InListFilter):
        return f"not in list {_name(child.in_list)}"
    return f"not ({_describe(child)})"


def _property(condition: PropertyFilter) -> str:
    name, op, value = condition.property, condition.op, condition.value
    if op in _EQUALITY:
        return f"{name} {_EQUALITY[op]} {_value(value)}"
    if op in _ORDER:
        return f"{name} {_ORDER[op]} {_bound(value)}"
    if op in _WORDS:
        return f"{name} {_WORDS[op]} {_value(value)}"
    match op:
        case PropertyOp.IN:
            return f"{name} in ({', '.join(map(_value, value))})"
        case PropertyOp.NOT_IN:
            return f"{name} not in ({', '.join(map(_value, value))})"
        case PropertyOp.BETWEEN:
            return f"{name} between {_bound(value[0])} and {_bound(value[1])}"
        case PropertyOp.KNOWN:
            return f"{name} is known"
        case PropertyOp.UNKNOWN:
            return f"{name} is unknown"
        case PropertyOp.BEFORE | PropertyOp.AFTER:
            return f"{name} {op.value} {_moment(value)}"
        case PropertyOp.WITHIN_LAST:
            return f"{name} in the last {format_duration(parse_duration(value))}"
        case PropertyOp.MORE_THAN_AGO:
            return f"{name} more than {format_duration(parse_duration(value))} ago"
    raise ValueError(f"unknown operator {op!r}")  # pragma: no cover: the enum is exhausted


def _event(condition: EventFilter, *, done: bool) -> str:
    text = f"has {'' if done else 'not '}done {_name(condition.event)}"
    if condition.where:
        pairs = (
            f"{_name(key)} is unknown" if value is None else f"{_name(key)} = {_value(value)}"
            for key, value in condition.where.items()
        )
        text += f" ({', '.join(pairs)})"
    if condition.min_count > 1:
        text += f" at least {condition.min_count} times"
    if condition.within is not None:
        text += f" in the last {format_duration(condition.within)}"
    return text


def _moment(value: str) -> str:
    """A `before`/`after` operand: a date as written, a signed duration relative to now."""
    try:
        parse_iso_date(value)
        return value.strip()
    except ValueError:
        shift = parse_duration(value, signed=True)
    if not shift:
        return "now"
    text = format_duration(abs(shift))
    return f"{text} ago" if shift.total_seconds() < 0 else f"{text} from now"


def _value(value: Any) -> str:
    """An operand compared as a value: text quoted (as JSON), numbers and booleans bare."""
    return json.dumps(value, ensure_ascii=False)


def _bound(value: Any) -> str:
    """An operand of an ordering (a number, or an ISO date, validated): written bare."""
    return value.strip() if isinstance(value, str) else _value(value)


def _name(name: str) -> str:
    return name if _BARE_NAME.match(name) else json.dumps(name, ensure_ascii=False)

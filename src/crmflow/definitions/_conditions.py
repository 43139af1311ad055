"""The condition language (SPEC §2.1): one recursive model.

Evaluation on a record lives in `crmflow.conditions` (Python and SQL); this module only
describes and validates the tree, so it stays importable inside the workflow sandbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, ValidationInfo, model_validator

from crmflow.limits import MAX_CONDITION_DEPTH, MAX_CONDITION_TERMS, MAX_EVENT_COUNT

from ._base import DefinitionModel, is_new_definition
from ._durations import PositiveDuration, parse_duration
from ._types import PROPERTY_NAME_PATTERN, Name, PropertyName, ScalarValue, check_json_value

Scalar = str | int | float | bool | None

PROPERTY_NAME = PROPERTY_NAME_PATTERN


class PropertyOp(StrEnum):
    EQ = "eq"
    NEQ = "neq"
    IN = "in"
    NOT_IN = "not_in"
    CONTAINS = "contains"
    NOT_CONTAINS = "not_contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    BETWEEN = "between"
    KNOWN = "known"
    UNKNOWN = "unknown"
    BEFORE = "before"
    AFTER = "after"
    WITHIN_LAST = "within_last"
    MORE_THAN_AGO = "more_than_ago"


_STRING_OPS = {
    PropertyOp.CONTAINS,
    PropertyOp.NOT_CONTAINS,
    PropertyOp.STARTS_WITH,
    PropertyOp.ENDS_WITH,
}
_ORDER_OPS = {PropertyOp.GT, PropertyOp.GTE, PropertyOp.LT, PropertyOp.LTE}
_NO_VALUE_OPS = {PropertyOp.KNOWN, PropertyOp.UNKNOWN}
_DURATION_OPS = {PropertyOp.WITHIN_LAST, PropertyOp.MORE_THAN_AGO}
_DATE_OPS = {PropertyOp.BEFORE, PropertyOp.AFTER}

_ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)


def parse_iso_date(text: str) -> date | datetime:
    """An ISO date or datetime; raises ValueError."""
    if not isinstance(text, str) or not _ISO_DATE.match(text.strip()):
        raise ValueError(f"expected an ISO-8601 date or datetime, got {text!r}")
    raw = text.strip()
    if len(raw) == 10:
        return date.fromisoformat(raw)
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_orderable(value: Any) -> bool:
    if _is_number(value):
        return True
    if isinstance(value, str):
        try:
            parse_iso_date(value)
            return True
        except ValueError:
            return False
    return False


class PropertyFilter(DefinitionModel):
    """Compare one property of the record."""

    property: PropertyName = Field(description="Name of the record property")
    op: PropertyOp = Field(description="Comparison operator")
    value: Any = Field(default=None, description="Operand; its form depends on `op`")

    @model_validator(mode="after")
    def _check_value(self) -> PropertyFilter:
        op, value = self.op, self.value
        check_json_value(value)  # no NaN, no infinity, at any depth
        if op in _NO_VALUE_OPS:
            if value is not None:
                raise ValueError(f"operator '{op}' takes no value")
        elif op in (PropertyOp.EQ, PropertyOp.NEQ):
            if not isinstance(value, Scalar):
                raise ValueError(f"operator '{op}' needs a single value (string, number, boolean)")
            if value is None:
                raise ValueError(
                    f"operator '{op}' needs a value; use 'known'/'unknown' to test for absence"
                )
        elif op in (PropertyOp.IN, PropertyOp.NOT_IN):
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, Scalar) and v is not None for v in value)
            ):
                raise ValueError(f"operator '{op}' needs a non-empty list of values")
        elif op in _STRING_OPS:
            if not isinstance(value, str) or value == "":
                raise ValueError(f"operator '{op}' needs a non-empty string value")
        elif op in _ORDER_OPS:
            if not _is_orderable(value):
                raise ValueError(f"operator '{op}' needs a number or an ISO-8601 date value")
        elif op is PropertyOp.BETWEEN:
            if not (isinstance(value, list) and len(value) == 2 and all(map(_is_orderable, value))):
                raise ValueError(
                    "operator 'between' needs [low, high]: two numbers or two ISO-8601 dates"
                )
            if _is_number(value[0]) != _is_number(value[1]):
                raise ValueError("operator 'between' needs two numbers or two dates, not a mix")
        elif op in _DATE_OPS:
            if not isinstance(value, str):
                raise ValueError(
                    f"operator '{op}' needs an ISO-8601 date or a signed duration such as '-30d'"
                )
            try:
                parse_iso_date(value)
            except ValueError:
                try:
                    parse_duration(value, signed=True)
                except ValueError:
                    raise ValueError(
                        f"operator '{op}' needs an ISO-8601 date or a signed duration such as"
                        f" '-30d', got {value!r}"
                    ) from None
        elif op in _DURATION_OPS:
            if not isinstance(value, str):
                raise ValueError(f"operator '{op}' needs a duration such as '30d'")
            parse_duration(value)
        return self


class InListFilter(DefinitionModel):
    """The record is a member of a static list."""

    in_list: Name = Field(description="List name")


class NotInListFilter(DefinitionModel):
    """The record is not a member of a static list."""

    not_in_list: Name = Field(description="List name")


class EventFilter(DefinitionModel):
    """The record did an event (at least `min_count` times, optionally within a period)."""

    event: Name = Field(description="Event name, e.g. form_submitted")
    where: dict[str, ScalarValue] = Field(
        default_factory=dict, description="Event properties that must be equal"
    )
    within: PositiveDuration | None = Field(
        default=None, description="Only events in this last period, e.g. 30d"
    )
    min_count: int = Field(
        default=1, ge=1, le=MAX_EVENT_COUNT, description="How many matching events are needed"
    )


class AllCondition(DefinitionModel):
    """Every child holds (AND)."""

    all: list[Condition] = Field(min_length=1, description="Conditions that must all hold")


class AnyCondition(DefinitionModel):
    """At least one child holds (OR)."""

    any: list[Condition] = Field(min_length=1, description="Conditions of which one must hold")


class NotCondition(DefinitionModel):
    """The child does not hold."""

    not_: Condition = Field(alias="not", description="The condition that must not hold")


_KINDS = ("all", "any", "not", "property", "in_list", "not_in_list", "event")


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for kind in _KINDS:
            if kind in value:
                return kind
        # A dump by field name (no by_alias) writes `not_`: it must validate back.
        return "not" if "not_" in value else None
    for cls, kind in (
        (AllCondition, "all"),
        (AnyCondition, "any"),
        (NotCondition, "not"),
        (PropertyFilter, "property"),
        (InListFilter, "in_list"),
        (NotInListFilter, "not_in_list"),
        (EventFilter, "event"),
    ):
        if isinstance(value, cls):
            return kind
    return None


Condition = Annotated[
    Annotated[AllCondition, Tag("all")]
    | Annotated[AnyCondition, Tag("any")]
    | Annotated[NotCondition, Tag("not")]
    | Annotated[PropertyFilter, Tag("property")]
    | Annotated[InListFilter, Tag("in_list")]
    | Annotated[NotInListFilter, Tag("not_in_list")]
    | Annotated[EventFilter, Tag("event")],
    Discriminator(
        _condition_kind,
        custom_error_type="invalid_condition",
        custom_error_message=(
            "a condition needs one of: all, any, not, property, in_list, not_in_list, event"
        ),
    ),
]

AllCondition.model_rebuild()
AnyCondition.model_rebuild()
NotCondition.model_rebuild()


def condition_shape(condition: Any) -> tuple[int, int]:
    """(depth, terms) of a condition, given as data or as models: how deeply `all`/`any`/`not`
    nest, and how many filters it holds (each value of `in`/`not_in` counting as one, as each is
    one more test in SQL). Iterative, so any depth is measured without recursion."""
    depth = terms = 0
    todo: list[tuple[Any, int]] = [(condition, 0)]
    while todo:
        node, level = todo.pop()
        if isinstance(node, DefinitionModel):
            node = node.model_dump(by_alias=True, exclude_defaults=True)
        if not isinstance(node, dict):
            continue
        children: Any = None
        for kind in ("all", "any", "not", "not_"):
            if kind in node:
                children = node[kind]
                break
        if children is None:
            values = node.get("value")
            in_ops = (PropertyOp.IN, PropertyOp.NOT_IN, "in", "not_in")
            many = node.get("op") in in_ops and isinstance(values, list)
            terms += max(len(values), 1) if many and isinstance(values, list) else 1
            depth = max(depth, level)
            continue
        for child in children if isinstance(children, list) else [children]:
            todo.append((child, level + 1))
        depth = max(depth, level + 1)
    return depth, terms


def _limited(value: Any, info: ValidationInfo) -> Any:
    if is_new_definition(info):
        depth, terms = condition_shape(value)
        if depth > MAX_CONDITION_DEPTH:
            raise ValueError(
                f"all/any/not nest {depth} levels deep here; at most {MAX_CONDITION_DEPTH}"
            )
        if terms > MAX_CONDITION_TERMS:
            raise ValueError(
                f"the condition has {terms} terms (filters, and values of in/not_in);"
                f" at most {MAX_CONDITION_TERMS}"
            )
    return value


RootCondition = Annotated[Condition, BeforeValidator(_limited)]
"""A condition where a tree starts (criteria, goal, unenroll_when, a branch's `when`): new
definitions keep it within MAX_CONDITION_DEPTH and MAX_CONDITION_TERMS."""

ConditionKind = Literal["all", "any", "not", "property", "in_list", "not_in_list", "event"]


@dataclass(frozen=True)
class ConditionReads:
    """The property, list and event names a condition reads: what can change its answer."""

    properties: frozenset[str] = frozenset()
    lists: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()

    def __or__(self, other: ConditionReads) -> ConditionReads:
        return ConditionReads(
            self.properties | other.properties,
            self.lists | other.lists,
            self.events | other.events,
        )


def condition_reads(condition: Condition) -> ConditionReads:
    """Every property, list and event name read anywhere in the condition tree."""
    match condition:
        case AllCondition(all=children) | AnyCondition(any=children):
            result = ConditionReads()
            for child in children:
                result |= condition_reads(child)
            return result
        case NotCondition():
            return condition_reads(condition.not_)
        case PropertyFilter():
            return ConditionReads(properties=frozenset({condition.property}))
        case InListFilter():
            return ConditionReads(lists=frozenset({condition.in_list}))
        case NotInListFilter():
            return ConditionReads(lists=frozenset({condition.not_in_list}))
        case EventFilter():
            return ConditionReads(events=frozenset({condition.event}))
    raise TypeError(f"not a condition: {condition!r}")

"""How one stored value is read and compared: the rules both the Python and the SQL side follow.

A property filter is first *planned* against `now` into a small test (`EqualsAny`, `TextMatch`,
`NumberRange`, `EpochRange`, `Known`) whose operands are already normalized: folded text, floats,
integer epoch seconds. `evaluate` applies the test to a Python value, `compile_condition` renders
the same test as SQL; neither side interprets the filter on its own, so they cannot drift apart.

Pure functions and frozen dataclasses: safe to import in the Temporal workflow sandbox.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from crmflow.definitions import (
    EventFilter,
    PropertyFilter,
    PropertyOp,
    parse_duration,
    parse_iso_date,
)

# Accepted text forms. SQL repeats them: GLOB patterns on SQLite, regular expressions on
# PostgreSQL; ASCII digits only so that `\d` never matches what GLOB `[0-9]` does not.
NUMERIC_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
NUMERIC_TEXT_MAX_LEN = 100  # keeps every numeric text within a double's range: no cast error
DATE_TEXT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]+)?)?"
    r"(Z|([+-])([0-9]{2}):?([0-9]{2}))?)?"
)
NUMBER_LIMIT = 1e308  # larger JSON numbers are not comparable (PostgreSQL could not cast them)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY = 86400
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Kind(StrEnum):
    MISSING = "missing"
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    OTHER = "other"  # a list or an object: only `known` applies


def kind_of(value: Any) -> Kind:
    if value is None:
        return Kind.MISSING
    if isinstance(value, bool):
        return Kind.BOOLEAN
    if isinstance(value, int | float):
        return Kind.NUMBER
    if isinstance(value, str):
        return Kind.STRING
    return Kind.OTHER


def fold(text: str) -> str:
    """ASCII-only lower case: what SQLite's lower() and PostgreSQL's lower(x COLLATE "C") do."""
    return text.translate(_ASCII_LOWER)


def json_number(value: Any) -> float | None:
    """A JSON number as a double; None for anything else or beyond ±1e308."""
    if kind_of(value) is not Kind.NUMBER or not abs(value) <= NUMBER_LIMIT:
        return None
    return float(value)


def numeric_text(text: str) -> float | None:
    if len(text) > NUMERIC_TEXT_MAX_LEN or not NUMERIC_TEXT.fullmatch(text):
        return None
    return float(text)


def number_operand(value: int | float) -> float:
    """A number written in a definition; beyond ±1e308 it is ±infinity (no stored value is)."""
    if abs(value) <= NUMBER_LIMIT:
        return float(value)
    return math.inf if value > 0 else -math.inf


def number_of(value: Any) -> float | None:
    """A JSON number or a numeric string, as a double."""
    if isinstance(value, str):
        return numeric_text(value)
    return json_number(value)


def date_epoch(value: Any) -> int | None:
    """Epoch seconds (UTC, fraction of second dropped) of a date or datetime string, else None.

    A date alone is its midnight UTC; a datetime without offset is UTC.
    """
    if not isinstance(value, str) or not (m := DATE_TEXT.fullmatch(value)):
        return None
    year, month, day = int(m[1]), int(m[2]), int(m[3])
    hour, minute, second = int(m[4] or 0), int(m[5] or 0), int(m[6] or 0)
    off_h, off_m = int(m[9] or 0), int(m[10] or 0)
    if hour > 23 or minute > 59 or second > 59 or off_h > 23 or off_m > 59:
        return None
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    offset = (off_h * 3600 + off_m * 60) * (-1 if m[8] == "-" else 1)
    return days * _DAY + hour * 3600 + minute * 60 + second - offset


def floor_epoch(moment: datetime, shift: timedelta = timedelta(0)) -> int:
    """Epoch seconds of `moment + shift`, floored; integer arithmetic, so it never overflows."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("`now` must be a timezone-aware datetime")
    micros = (moment - _EPOCH) // timedelta(microseconds=1) + shift // timedelta(microseconds=1)
    return micros // 1_000_000


# ---------------------------------------------------------------------------- property tests


@dataclass(frozen=True)
class EqOperand:
    """One operand of eq/in, read every way a stored value may equal it.

    `text` matches strings case-insensitively; `number` matches JSON numbers, and numeric
    strings too when `number_matches_text` (the operand itself is a number); `boolean` matches
    JSON booleans. A boolean operand also matches the strings "true"/"false" through `text`,
    and a string operand "true"/"false" matches booleans through `boolean`.
    """

    text: str | None
    number: float | None
    number_matches_text: bool
    boolean: bool | None

    @classmethod
    def of(cls, operand: str | int | float | bool) -> EqOperand:
        if isinstance(operand, bool):
            return cls("true" if operand else "false", None, False, operand)
        if isinstance(operand, int | float):
            return cls(None, number_operand(operand), True, None)
        folded = fold(operand)
        boolean = {"true": True, "false": False}.get(folded)
        return cls(folded, numeric_text(operand), False, boolean)

    def matches(self, value: Any) -> bool:
        kind = kind_of(value)
        if kind is Kind.STRING:
            if self.text is not None and fold(value) == self.text:
                return True
            return self.number_matches_text and numeric_text(value) == self.number
        if kind is Kind.NUMBER:
            return self.number is not None and json_number(value) == self.number
        if kind is Kind.BOOLEAN:
            return value is self.boolean
        return False


@dataclass(frozen=True)
class EqualsAny:
    operands: tuple[EqOperand, ...]

    def matches(self, value: Any) -> bool:
        return any(operand.matches(value) for operand in self.operands)


@dataclass(frozen=True)
class TextMatch:
    mode: Literal["contains", "starts_with", "ends_with"]
    needle: str  # folded

    def matches(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        folded = fold(value)
        if self.mode == "contains":
            return self.needle in folded
        if self.mode == "starts_with":
            return folded.startswith(self.needle)
        return folded.endswith(self.needle)


@dataclass(frozen=True)
class NumberRange:
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True

    def matches(self, value: Any) -> bool:
        number = number_of(value)
        if number is None:
            return False
        if self.low is not None and not (
            number >= self.low if self.low_inclusive else number > self.low
        ):
            return False
        return self.high is None or (
            number <= self.high if self.high_inclusive else number < self.high
        )


@dataclass(frozen=True)
class EpochRange:
    """Dates and datetimes whose epoch second lies in [low, high] (None: unbounded)."""

    low: int | None = None
    high: int | None = None

    def matches(self, value: Any) -> bool:
        epoch = date_epoch(value)
        if epoch is None:
            return False
        return (self.low is None or epoch >= self.low) and (self.high is None or epoch <= self.high)


@dataclass(frozen=True)
class Known:
    def matches(self, value: Any) -> bool:
        return value is not None


Test = EqualsAny | TextMatch | NumberRange | EpochRange | Known


@dataclass(frozen=True)
class PropertyPlan:
    """A property filter resolved against `now`: holds when `test` matches, or not if `negate`."""

    property: str
    test: Test
    negate: bool

    def holds(self, properties: dict[str, Any]) -> bool:
        return self.test.matches(properties.get(self.property)) != self.negate


_NEGATIONS = {
    PropertyOp.NEQ: PropertyOp.EQ,
    PropertyOp.NOT_IN: PropertyOp.IN,
    PropertyOp.NOT_CONTAINS: PropertyOp.CONTAINS,
    PropertyOp.UNKNOWN: PropertyOp.KNOWN,
}


def _seconds_of(operand: str) -> tuple[int, int]:
    """The first and last epoch second an ISO operand stands for: a date alone is its whole
    UTC day, a datetime its own second."""
    parsed = parse_iso_date(operand)
    if isinstance(parsed, datetime):
        offset = int((parsed.utcoffset() or timedelta(0)).total_seconds())
        naive = parsed.replace(tzinfo=None, microsecond=0)
        second = (naive - datetime(1970, 1, 1)) // timedelta(seconds=1) - offset
        return second, second
    start = (parsed.toordinal() - _EPOCH_ORDINAL) * _DAY
    return start, start + _DAY - 1


def _order_test(op: PropertyOp, operand: Any) -> Test:
    if isinstance(operand, str):
        # Epoch seconds are integers: `> last` is `>= last + 1`.
        first, last = _seconds_of(operand)
        return {
            PropertyOp.GT: EpochRange(low=last + 1),
            PropertyOp.GTE: EpochRange(low=first),
            PropertyOp.LT: EpochRange(high=first - 1),
            PropertyOp.LTE: EpochRange(high=last),
        }[op]
    number = number_operand(operand)
    return {
        PropertyOp.GT: NumberRange(low=number, low_inclusive=False),
        PropertyOp.GTE: NumberRange(low=number),
        PropertyOp.LT: NumberRange(high=number, high_inclusive=False),
        PropertyOp.LTE: NumberRange(high=number),
    }[op]


def _duration(value: Any, *, signed: bool = False) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(value, signed=signed)


def plan_property(condition: PropertyFilter, *, now: datetime) -> PropertyPlan:
    floor_epoch(now)  # refuses a naive `now`, whatever the operator
    op, value = condition.op, condition.value
    negate = op in _NEGATIONS
    op = _NEGATIONS.get(op, op)
    test: Test
    if op is PropertyOp.KNOWN:
        test = Known()
    elif op is PropertyOp.EQ:
        test = EqualsAny((EqOperand.of(value),))
    elif op is PropertyOp.IN:
        test = EqualsAny(tuple(EqOperand.of(v) for v in value))
    elif op in (PropertyOp.CONTAINS, PropertyOp.STARTS_WITH, PropertyOp.ENDS_WITH):
        test = TextMatch(op.value, fold(value))  # type: ignore[arg-type]
    elif op is PropertyOp.BETWEEN:
        low, high = value
        if isinstance(low, str):
            test = EpochRange(_seconds_of(low)[0], _seconds_of(high)[1])
        else:
            test = NumberRange(low=number_operand(low), high=number_operand(high))
    elif op in (PropertyOp.BEFORE, PropertyOp.AFTER):
        if _is_iso(value):
            test = _order_test(PropertyOp.LT if op is PropertyOp.BEFORE else PropertyOp.GT, value)
        else:
            moment = floor_epoch(now, _duration(value, signed=True))
            before = op is PropertyOp.BEFORE
            test = EpochRange(high=moment - 1) if before else EpochRange(low=moment + 1)
    elif op is PropertyOp.WITHIN_LAST:
        test = EpochRange(floor_epoch(now, -_duration(value)), floor_epoch(now))
    elif op is PropertyOp.MORE_THAN_AGO:
        test = EpochRange(high=floor_epoch(now, -_duration(value)) - 1)
    else:
        test = _order_test(op, value)
    return PropertyPlan(condition.property, test, negate)


def _is_iso(value: Any) -> bool:
    try:
        parse_iso_date(value)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------- event tests


@dataclass(frozen=True)
class EventPlan:
    """An event filter resolved against `now`. A `where` operand of None asks for the event
    property to be missing (or null)."""

    name: str
    where: tuple[tuple[str, EqOperand | None], ...]
    since: datetime | None  # occurred_at >= since; None: any time
    min_count: int

    def matches(self, name: str, occurred_at: datetime, properties: dict[str, Any]) -> bool:
        if name != self.name or (self.since is not None and occurred_at < self.since):
            return False
        return all(
            properties.get(key) is None if operand is None else operand.matches(properties.get(key))
            for key, operand in self.where
        )


def plan_event(condition: EventFilter, *, now: datetime) -> EventPlan:
    floor_epoch(now)  # refuses a naive `now`
    since: datetime | None = None
    if condition.within is not None:
        try:
            since = now.astimezone(UTC) - condition.within
        except OverflowError:  # a window longer than the calendar: every event counts
            since = None
    where = tuple(
        (key, None if value is None else EqOperand.of(value))
        for key, value in sorted(condition.where.items())
    )
    return EventPlan(condition.event, where, since, condition.min_count)

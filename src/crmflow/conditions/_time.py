"""Time-relative terms: the leaves of a condition whose truth changes as time passes, with no
change to the record, and the instants at which they change.

Pure and deterministic (safe in the workflow sandbox), in integer microseconds so that no
arithmetic overflows a `datetime` and no boundary is off by a rounding.

Each term changes only at instants that follow from the record's data: an *anchor* (the epoch
second E of a date property value, or an event's `occurred_at`) plus a fixed *offset*. As
`plans` plans them (`now` floored to the second for property tests, exact for events):

- `within_last D` holds while floor(now - D) <= E <= floor(now): it turns true at E and false
  at E + D + 1 s (a future date is not in the last D);
- `more_than_ago D` holds when E <= floor(now - D) - 1: it turns true at E + D + 1 s;
- `before S` (S a signed duration) holds when E <= floor(now + S) - 1: true from E + 1 s - S;
- `after S` holds when E >= floor(now + S) + 1: false from E - S;
- an event filter with `within W` counts the matching events (name and `where`) with
  occurred_at >= now - W. Occurrences only age out (a future event counts already), so it
  changes at most once: it turns false at o_k + W + 1 µs, o_k being the `min_count`-th latest
  matching occurrence.

"Changes at T" means the term's value at T differs from its value at T - 1 µs: as a function of
`now`, a term is constant on half-open intervals [T_i, T_i+1), so it changes in a window
(t0, t1] exactly when one of its instants lies there. ISO-dated `before`/`after`, `gt`/`lt`/
`between` (dates or numbers, never relative), every other operator and events without `within`
do not depend on `now`.

`crossed(condition, snapshot, t0, t1)` says whether some term of the condition changes in
(t0, t1]: the condition's value *may* differ (a term can change under an `all` whose other
branch is false), and it may also change and change back inside the window (a short
`within_last`), which is why a sweep should judge the record at each instant `thresholds`
gives, not only at t1. `next_change` is exact: the first of those instants at which the
condition's value differs from its value at `after`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

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
    parse_duration,
)

from ._evaluate import evaluate
from ._snapshot import RecordSnapshot
from .plans import _is_iso, date_epoch, plan_event

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
SECOND_US = 1_000_000
# The instants a datetime can hold, in microseconds since the epoch.
MIN_US = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _US
MAX_US = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _US


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("instants must be timezone-aware datetimes")
    return (moment - _EPOCH) // _US


def from_micros(micros: int) -> datetime | None:
    """The UTC datetime of an instant, or None beyond what a datetime can hold."""
    if not MIN_US <= micros <= MAX_US:
        return None
    return _EPOCH + timedelta(microseconds=micros)


def _micros_of(duration: timedelta) -> int:
    return duration // _US


@dataclass(frozen=True, kw_only=True)
class TimeTerm:
    """One leaf of a condition whose truth can change with no change to the record.

    A property term changes at `value + offset` for each offset, where `value` is the instant of
    the property's date value (a value that is not a date never changes). An event term
    changes once, at `o + offsets[0]`, where `o` is the `min_count`-th latest occurrence of an
    event named `name` whose properties satisfy `where`. Offsets are microseconds. Two terms
    that change at the same instants for every record are equal (`filter` is not compared).
    """

    kind: Literal["property", "event"]
    name: str
    offsets: tuple[int, ...]
    where: tuple[tuple[str, str | int | float | bool | None], ...] = ()
    min_count: int = 1
    filter: PropertyFilter | EventFilter = field(compare=False, repr=False)

    def anchors(self, snapshot: RecordSnapshot) -> list[int]:
        """The microsecond instants the term's changes are counted from, for this record: the
        property's date value (none or one), or the deciding occurrence (none or one)."""
        if isinstance(self.filter, PropertyFilter):
            epoch = date_epoch(snapshot.properties.get(self.name))
            return [] if epoch is None else [epoch * SECOND_US]
        # Every matching occurrence, whatever its age: `since` is what time changes.
        plan = replace(plan_event(self.filter, now=_EPOCH), since=None)
        found = sorted(
            (
                to_micros(e.occurred_at)
                for e in snapshot.events
                if plan.matches(e.name, e.occurred_at, e.properties)
            ),
            reverse=True,
        )
        return [found[self.min_count - 1]] if len(found) >= self.min_count else []

    def instants(self, snapshot: RecordSnapshot) -> list[int]:
        """Every microsecond instant at which the term changes for this record (some may lie
        beyond what a datetime holds)."""
        return [anchor + offset for anchor in self.anchors(snapshot) for offset in self.offsets]

    def anchor_ranges(self, since: datetime, until: datetime) -> list[tuple[int, int]]:
        """For each offset, the inclusive range of anchors (microseconds) whose change falls in
        (since, until]: what a store selects with a range scan of its anchor index."""
        low, high = to_micros(since), to_micros(until)
        return [(low - offset + 1, high - offset) for offset in self.offsets if low < high]


def _property_offsets(condition: PropertyFilter) -> tuple[int, ...] | None:
    op, value = condition.op, condition.value
    if op in (PropertyOp.WITHIN_LAST, PropertyOp.MORE_THAN_AGO):
        duration = _micros_of(_duration(value, signed=False))
        last = duration + SECOND_US
        return (0, last) if op is PropertyOp.WITHIN_LAST else (last,)
    if op in (PropertyOp.BEFORE, PropertyOp.AFTER) and not _is_iso(value):
        shift = _micros_of(_duration(value, signed=True))
        return (SECOND_US - shift,) if op is PropertyOp.BEFORE else (-shift,)
    return None


def _duration(value: object, *, signed: bool) -> timedelta:
    return value if isinstance(value, timedelta) else parse_duration(str(value), signed=signed)


_NODES = (
    AllCondition,
    AnyCondition,
    NotCondition,
    PropertyFilter,
    EventFilter,
    InListFilter,
    NotInListFilter,
)


def _leaves(condition: Condition) -> Iterator[Condition]:
    todo: list[Condition] = [condition]
    while todo:
        node = todo.pop()
        if isinstance(node, AllCondition):
            todo.extend(reversed(node.all))
        elif isinstance(node, AnyCondition):
            todo.extend(reversed(node.any))
        elif isinstance(node, NotCondition):
            todo.append(node.not_)
        else:
            yield node


def time_terms(condition: Condition) -> list[TimeTerm]:
    """The condition's time-relative terms, each once, in the order they appear."""
    terms: dict[TimeTerm, None] = {}
    for leaf in _leaves(condition):
        if isinstance(leaf, PropertyFilter):
            offsets = _property_offsets(leaf)
            if offsets is not None:
                term = TimeTerm(kind="property", name=leaf.property, offsets=offsets, filter=leaf)
                terms[term] = None
        elif isinstance(leaf, EventFilter) and leaf.within is not None:
            term = TimeTerm(
                kind="event",
                name=leaf.event,
                offsets=(_micros_of(leaf.within) + 1,),
                where=tuple(sorted(leaf.where.items())),
                min_count=leaf.min_count,
                filter=leaf,
            )
            terms[term] = None
        elif not isinstance(leaf, _NODES):
            raise TypeError(f"not a condition: {leaf!r}")
    return list(terms)


def _terms_of(condition: Condition | Iterable[TimeTerm]) -> list[TimeTerm]:
    if isinstance(condition, _NODES):
        return time_terms(condition)
    return list(condition)


def thresholds(
    condition: Condition | Iterable[TimeTerm],
    snapshot: RecordSnapshot,
    *,
    after: datetime | None = None,
    until: datetime | None = None,
) -> list[datetime]:
    """The instants at which a time term of the condition changes for this record, in order,
    each once; with `after` and `until`, only those in (after, until]."""
    low = MIN_US - 1 if after is None else to_micros(after)
    high = MAX_US if until is None else to_micros(until)
    found = {
        instant
        for term in _terms_of(condition)
        for instant in term.instants(snapshot)
        if low < instant <= high
    }
    return [moment for instant in sorted(found) if (moment := from_micros(instant)) is not None]


def crossed(
    condition: Condition | Iterable[TimeTerm], snapshot: RecordSnapshot, t0: datetime, t1: datetime
) -> bool:
    """Whether a time term of the condition changes in (t0, t1] for this record: whenever the
    condition's value at t1 differs from its value at t0, this holds."""
    return bool(thresholds(condition, snapshot, after=t0, until=t1))


def next_change(condition: Condition, snapshot: RecordSnapshot, after: datetime) -> datetime | None:
    """The first instant later than `after` at which the condition's value differs from its
    value at `after`, with the record as it is; None if time alone never changes it."""
    held = evaluate(condition, snapshot, now=after)
    for moment in thresholds(condition, snapshot, after=after):
        if evaluate(condition, snapshot, now=moment) != held:
            return moment
    return None

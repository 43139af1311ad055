"""Compile a condition to a SQLAlchemy boolean clause over the `records` table.

Every property test is the SQL rendering of the plan `crmflow.conditions.plans` builds for
Python, and reads the
stored JSON value in the same ways: as a string, as a double, as epoch seconds. Two rules keep
SQL and Python in agreement:

- Every leaf is strictly TRUE or FALSE, never NULL (`coalesce(..., false)`), so `not` and the
  negated operators turn "missing" into true exactly as Python does.
- No expression can raise on any stored value: PostgreSQL casts only inside a CASE branch whose
  condition has already checked the text (a failed cast would abort the whole query), and SQLite
  parses dates from validated fixed positions rather than trusting its lenient date functions.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    Numeric,
    Select,
    String,
    Text,
    and_,
    case,
    cast,
    collate,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    type_coerce,
)

from crmflow.conditions.plans import (
    NUMERIC_TEXT_MAX_LEN,
    EpochRange,
    EqOperand,
    EqualsAny,
    Known,
    NumberRange,
    Test,
    TextMatch,
    plan_event,
    plan_property,
)
from crmflow.definitions import (
    AllCondition,
    AnyCondition,
    Condition,
    EventFilter,
    InListFilter,
    NotCondition,
    NotInListFilter,
    PropertyFilter,
)

from ._tables import Event, ListMembership, Record

Clause = ColumnElement[bool]
DIALECTS = ("sqlite", "postgresql")


def compile_condition(condition: Condition, *, now: datetime, dialect_name: str) -> Clause:
    """A boolean clause over `records` (correlated subqueries for lists and events) that holds
    exactly for the records `evaluate` says match at `now`."""
    if dialect_name not in DIALECTS:
        raise ValueError(f"conditions compile for {' and '.join(DIALECTS)}, not {dialect_name!r}")
    return _Compiler(dialect_name, now).clause(condition)


def select_matching(
    condition: Condition, *, object_type: str, now: datetime, dialect_name: str
) -> Select[str]:
    """The ids of the records of `object_type` that match, in id order."""
    clause = compile_condition(condition, now=now, dialect_name=dialect_name)
    return select(Record.id).where(Record.object_type == object_type, clause).order_by(Record.id)


class _Compiler:
    def __init__(self, dialect_name: str, now: datetime) -> None:
        self.dialect_name = dialect_name
        self.now = now

    def field(self, column: Any, key: str) -> _Field:
        if self.dialect_name == "postgresql":
            return _PgField(column, key)
        return _SqliteField(column, key)

    def clause(self, condition: Condition) -> Clause:
        if isinstance(condition, AllCondition):
            return and_(*(self.clause(child) for child in condition.all))
        if isinstance(condition, AnyCondition):
            return or_(*(self.clause(child) for child in condition.any))
        if isinstance(condition, NotCondition):
            return not_(self.clause(condition.not_))
        if isinstance(condition, PropertyFilter):
            plan = plan_property(condition, now=self.now)
            held = _strict(_test(plan.test, self.field(Record.properties, plan.property)))
            return not_(held) if plan.negate else held
        if isinstance(condition, InListFilter):
            return _member(condition.in_list)
        if isinstance(condition, NotInListFilter):
            return not_(_member(condition.not_in_list))
        if isinstance(condition, EventFilter):
            return self.event(condition)
        raise TypeError(f"not a condition: {condition!r}")

    def event(self, condition: EventFilter) -> Clause:
        plan = plan_event(condition, now=self.now)
        where: list[Clause] = [
            Event.object_type == Record.object_type,
            Event.record_id == Record.id,
            Event.name == plan.name,
        ]
        if plan.since is not None:
            where.append(Event.occurred_at >= plan.since)
        for key, operand in plan.where:
            field = self.field(Event.properties, key)
            where.append(not_(field.known) if operand is None else _strict(_equals(operand, field)))
        if plan.min_count == 1:
            return exists().where(*where)
        count = select(func.count()).select_from(Event).where(*where).scalar_subquery()
        return count >= plan.min_count


def _member(list_name: str) -> Clause:
    return exists().where(
        ListMembership.object_type == Record.object_type,
        ListMembership.record_id == Record.id,
        ListMembership.list_name == list_name,
    )


def _strict(clause: Clause) -> Clause:
    return func.coalesce(clause, false(), type_=clause.type)


def _test(test: Test, field: _Field) -> Clause:
    if isinstance(test, Known):
        return field.known
    if isinstance(test, EqualsAny):
        return or_(*(_equals(operand, field) for operand in test.operands))
    if isinstance(test, TextMatch):
        return field.text_match(test)
    if isinstance(test, NumberRange):
        return _range(field.number, test.low, test.low_inclusive, test.high, test.high_inclusive)
    if isinstance(test, EpochRange):
        return field.epoch_in(test.low, test.high)
    raise TypeError(f"unknown test {test!r}")


def _equals(operand: EqOperand, field: _Field) -> Clause:
    # Each part is NULL or false unless the stored value has that part's kind.
    parts: list[Clause] = []
    if operand.text is not None:
        parts.append(field.folded == operand.text)
    if operand.number is not None:
        parts.append(field.json_number == operand.number)
        if operand.number_matches_text:
            parts.append(field.text_number == operand.number)
    if operand.boolean is not None:
        parts.append(field.is_true if operand.boolean else field.is_false)
    return or_(false(), *parts)


def _range(
    value: ColumnElement[Any], low: Any, low_inclusive: bool, high: Any, high_inclusive: bool
) -> Clause:
    parts: list[Clause] = [value.is_not(None)]
    if low is not None:
        parts.append(value >= low if low_inclusive else value > low)
    if high is not None:
        parts.append(value <= high if high_inclusive else value < high)
    return and_(*parts)


def _once(*columns: ColumnElement[Any], correlate: Any = None) -> Any:
    """A one-row sub-select of these columns, that the databases compute once, not per use."""
    query = select(*columns).offset(0)
    return (query.correlate(correlate) if correlate is not None else query).subquery()


def _int(text: ColumnElement[Any]) -> ColumnElement[int]:
    return cast(text, Integer)


class _Field:
    """One key of a JSON column. Each reading is NULL when the value is not of its kind."""

    table: Any  # the table of the JSON column, that sub-selects correlate to
    raw: ColumnElement[str]  # text of a string, digits of a number; NULL when missing
    is_string: Clause
    is_true: Clause
    is_false: Clause
    known: Clause  # present and not null; never NULL itself
    json_number: ColumnElement[float]

    @property
    def folded(self) -> ColumnElement[str]:
        return case((self.is_string, self.lower(self.raw)))

    @property
    def text_number(self) -> ColumnElement[float]:
        return case(
            (and_(self.is_string, self.numeric_text(self.raw)), cast(self.raw, Float)),
        )

    @property
    def number(self) -> ColumnElement[float]:
        return func.coalesce(self.json_number, self.text_number, type_=Float)

    def text_match(self, test: TextMatch) -> Clause:
        folded, needle = self.folded, test.needle
        if test.mode == "contains":
            return self.position(folded, needle) > 0
        if test.mode == "starts_with":
            return func.substr(folded, 1, len(needle)) == needle
        return self.suffix(folded, len(needle)) == needle

    def epoch_in(self, low: int | None, high: int | None) -> Clause:
        """Whether the value is a date whose epoch second lies in [low, high], following
        `plans.date_epoch`.

        The text is checked against the grammar first; then every part sits at a fixed position,
        except the offset, which is counted back from the end (`tail`). Each step is a sub-select
        computed once per row (OFFSET 0 stops both databases from inlining it back into every
        use), and a cast only runs under a CASE whose condition has checked its input.
        """
        value = _once(self.is_string.label("is_string"), self.raw.label("x"), correlate=self.table)
        x, length = value.c.x, func.length(value.c.x)
        tail = case(
            (self.ends_like(x, "Z"), 1),
            (self.ends_like(x, "[+-][0-9][0-9]:[0-9][0-9]"), 6),
            (self.ends_like(x, "[+-][0-9][0-9][0-9][0-9]"), 5),
            else_=0,
        )
        measured = _once(value.c.is_string, x, length.label("n"), tail.label("tail"))
        m = measured.c
        ok = and_(m.is_string, self.date_shape(m.x, m.n, m.n - m.tail))
        checked = _once(m.x, m.n, m.tail, ok.label("ok"))
        x, n, tail, ok = checked.c.x, checked.c.n, checked.c.tail, checked.c.ok
        has_offset = tail >= 5

        def part(start: Any, size: int, present: Clause | None = None) -> ColumnElement[int]:
            """A number at a fixed place of a checked text; 0 when `present` says it is not."""
            number = _int(func.substr(x, start, size))
            if present is None:
                return case((ok, number))
            return case((and_(ok, present), number), (ok, 0))

        west = and_(has_offset, func.substr(x, n - tail + 1, 1) == "-")
        parts = _once(
            x,
            part(1, 4).label("year"),
            part(6, 2).label("month"),
            part(9, 2).label("day"),
            part(12, 2, n > 10).label("hour"),
            part(15, 2, n > 10).label("minute"),
            part(18, 2, n - tail >= 19).label("second"),
            part(n - tail + 2, 2, has_offset).label("off_hour"),
            part(n - 1, 2, has_offset).label("off_minute"),
            case((west, -1), else_=1).label("off_sign"),
        )
        p = parts.c
        in_range = and_(
            p.year >= 1,
            p.month.between(1, 12),
            p.day.between(1, 31),
            p.hour <= 23,
            p.minute <= 59,
            p.second <= 59,
            p.off_hour <= 23,
            p.off_minute <= 59,
        )
        seconds = (
            self.midnight_epoch(p.x, p.year, p.month, p.day)
            + p.hour * 3600
            + p.minute * 60
            + p.second
            - p.off_sign * (p.off_hour * 3600 + p.off_minute * 60)
        )
        real = self.real_date(p.x, p.year, p.month, p.day)
        epoch = _once(case((in_range, case((real, seconds)))).label("epoch")).c.epoch
        return select(_range(epoch, low, True, high, True)).scalar_subquery()

    # Dialect hooks.
    def lower(self, text: ColumnElement[str]) -> ColumnElement[str]:
        raise NotImplementedError

    def numeric_text(self, text: ColumnElement[str]) -> Clause:
        raise NotImplementedError

    def position(self, text: ColumnElement[str], needle: str) -> ColumnElement[int]:
        raise NotImplementedError

    def suffix(self, text: ColumnElement[str], size: int) -> ColumnElement[str]:
        raise NotImplementedError

    def ends_like(self, text: ColumnElement[str], pattern: str) -> Clause:
        """`pattern` is a GLOB fragment of literal characters and [...] classes."""
        raise NotImplementedError

    def date_shape(
        self, text: ColumnElement[str], length: ColumnElement[int], body: ColumnElement[int]
    ) -> Clause:
        raise NotImplementedError

    def real_date(self, text: ColumnElement[str], year: Any, month: Any, day: Any) -> Clause:
        raise NotImplementedError

    def midnight_epoch(
        self, text: ColumnElement[str], year: Any, month: Any, day: Any
    ) -> ColumnElement[int]:
        raise NotImplementedError


_SAFE_KEY = re.compile(r"[A-Za-z0-9_.-]+")
_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
_MINUTE_GLOB = _DATE_GLOB + "[T ][0-9][0-9]:[0-9][0-9]"


class _SqliteField(_Field):
    def __init__(self, column: Any, key: str) -> None:
        self.table = column.table
        if _SAFE_KEY.fullmatch(key):
            path = f'$."{key}"'
            kind: ColumnElement[str] = func.json_type(column, path)
            self.raw = type_coerce(func.json_extract(column, path), Text)
        else:
            # json_extract matches keys in their escaped JSON form ("é" is stored as "\u00e9"):
            # json_each decodes them, at the price of a subquery.
            entries = func.json_each(column).table_valued("key", "value", "type")
            kind = select(entries.c.type).where(entries.c.key == key).scalar_subquery()
            self.raw = type_coerce(
                select(entries.c.value).where(entries.c.key == key).scalar_subquery(), Text
            )
        self.is_string = kind == "text"
        self.is_true = kind == "true"
        self.is_false = kind == "false"
        self.known = and_(kind.is_not(None), kind != "null")
        limit = literal_column("1e308", Numeric)
        number = and_(kind.in_(["integer", "real"]), func.abs(self.raw) <= limit)
        self.json_number = case((number, cast(self.raw, Float)))

    def lower(self, text: ColumnElement[str]) -> ColumnElement[str]:
        return func.lower(text)  # ASCII only without the ICU extension, as `fold` does

    def numeric_text(self, text: ColumnElement[str]) -> Clause:
        # -?[0-9]+(\.[0-9]+)? without regular expressions: after an optional "-", a digit first
        # and last, nothing but digits once the dots are removed, and at most one dot.
        unsigned = case((func.substr(text, 1, 1) == "-", func.substr(text, 2)), else_=text)
        digits = func.replace(unsigned, ".", "")
        return and_(
            func.length(text) <= NUMERIC_TEXT_MAX_LEN,
            unsigned.op("GLOB")("[0-9]*"),
            unsigned.op("GLOB")("*[0-9]"),
            not_(digits.op("GLOB")("*[^0-9]*")),
            func.length(unsigned) - func.length(digits) <= 1,
        )

    def position(self, text: ColumnElement[str], needle: str) -> ColumnElement[int]:
        return func.instr(text, needle)

    def suffix(self, text: ColumnElement[str], size: int) -> ColumnElement[str]:
        return func.substr(text, -size)

    def ends_like(self, text: ColumnElement[str], pattern: str) -> Clause:
        return text.op("GLOB")("*" + pattern)

    def date_shape(
        self, text: ColumnElement[str], length: ColumnElement[int], body: ColumnElement[int]
    ) -> Clause:
        return or_(
            and_(length == 10, text.op("GLOB")(_DATE_GLOB)),
            and_(body == 16, func.substr(text, 1, 16).op("GLOB")(_MINUTE_GLOB)),
            and_(body == 19, func.substr(text, 1, 19).op("GLOB")(_MINUTE_GLOB + ":[0-9][0-9]")),
            and_(
                body >= 21,
                func.substr(text, 1, 20).op("GLOB")(_MINUTE_GLOB + ":[0-9][0-9]."),
                not_(func.substr(text, 21, body - 20).op("GLOB")("*[^0-9]*")),
            ),
        )

    def real_date(self, text: ColumnElement[str], year: Any, month: Any, day: Any) -> Clause:
        # date() echoes an unmodified input such as 2026-02-30; a modifier makes it normalize.
        ymd = func.substr(text, 1, 10)
        return func.date(ymd, "+0 days") == ymd

    def midnight_epoch(
        self, text: ColumnElement[str], year: Any, month: Any, day: Any
    ) -> ColumnElement[int]:
        return cast(func.strftime("%s", func.substr(text, 1, 10)), BigInteger)


_NUMERIC_REGEX = r"^-?[0-9]+(\.[0-9]+)?$"
_DATE_REGEX = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?$"
)


class _PgField(_Field):
    def __init__(self, column: Any, key: str) -> None:
        self.table = column.table
        json_value = column.op("->")(literal(key, String))
        kind = func.jsonb_typeof(json_value)
        self.raw = column.op("->>", return_type=Text)(literal(key, String))
        self.is_string = kind == "string"
        self.is_true = and_(kind == "boolean", self.raw == "true")
        self.is_false = and_(kind == "boolean", self.raw == "false")
        self.known = and_(kind.is_not(None), kind != "null")
        limit = literal_column("1e308", Numeric)
        in_range = func.abs(cast(self.raw, Numeric)) <= limit
        self.json_number = case((kind == "number", case((in_range, cast(self.raw, Float)))))

    def lower(self, text: ColumnElement[str]) -> ColumnElement[str]:
        return func.lower(collate(text, "C"))  # the C collation folds ASCII letters only

    def numeric_text(self, text: ColumnElement[str]) -> Clause:
        return and_(func.length(text) <= NUMERIC_TEXT_MAX_LEN, text.op("~")(_NUMERIC_REGEX))

    def position(self, text: ColumnElement[str], needle: str) -> ColumnElement[int]:
        return func.strpos(text, needle)

    def suffix(self, text: ColumnElement[str], size: int) -> ColumnElement[str]:
        return func.right(text, size)

    def ends_like(self, text: ColumnElement[str], pattern: str) -> Clause:
        return text.op("~")(pattern + "$")

    def date_shape(
        self, text: ColumnElement[str], length: ColumnElement[int], body: ColumnElement[int]
    ) -> Clause:
        return text.op("~")(_DATE_REGEX)

    def real_date(self, text: ColumnElement[str], year: Any, month: Any, day: Any) -> Clause:
        # make_date raises on 2026-02-30; the first of the month plus (day - 1) days does not,
        # and lands in the same month only for a real date.
        return func.date_part("month", func.make_date(year, month, 1) + (day - 1)) == month

    def midnight_epoch(
        self, text: ColumnElement[str], year: Any, month: Any, day: Any
    ) -> ColumnElement[int]:
        days = func.make_date(year, month, day) - literal_column("DATE '1970-01-01'")
        return cast(days, BigInteger) * 86400

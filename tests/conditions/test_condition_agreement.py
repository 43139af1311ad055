"""Property-based: for generated records and condition trees of every operator, the SQL clause
selects exactly the records `evaluate` accepts, on SQLite and on PostgreSQL.

Values are drawn from small pools on purpose (a few property names, words that differ only by
case, numbers next to their numeric strings, dates on the boundaries of the operands), so that
generated conditions hit stored values and their edges often.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from condition_helpers import NOW, OBJECT_TYPE, CondStore, condition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from crmflow.conditions import EventSnapshot, RecordSnapshot, evaluate, explain
from crmflow.definitions._conditions import PropertyOp

PROPERTIES = ["a", "b", "c.d"]
LISTS = ["vip", "webinar", "do not contact"]
EVENTS = ["signup", "opened"]
EVENT_KEYS = ["form", "n", 'ü"k']  # the last one is not a plain JSON path key on SQLite

# fmt: off
WORDS = [
    "lead", "Lead", "LEAD", "customer", "true", "TRUE", "False", "", "é", "É", "ß", "straße",
    "İ", "ı", "2026", "2026-03-01", "12:00", "x",
]
NUMBER_LIKE = [
    "120", "120.0", "-0.5", "007", "7", "-0", "00.10", "1e3", " 12", "12 ", "1.", ".5", "+1", "-",
    "--1", "1-2", "1.2.3", "0x10", "٣", "１２", "Infinity", "NaN", "1" * 101, "9" * 100,
]
NUMBERS = [0, 7, 120, -0.5, 99.5, 0.1, -0.0, 2**53, 2**53 + 1, 10**20, 1e308, 10**400, 5e-324]
MOMENTS = [
    timedelta(0), timedelta(seconds=1), timedelta(seconds=-1), timedelta(days=-30),
    timedelta(days=-30, seconds=-1), timedelta(days=-30, seconds=1), timedelta(days=1),
    timedelta(days=-1), timedelta(days=-7), timedelta(hours=-12), timedelta(microseconds=-250_000),
    timedelta(days=-29, hours=-23, minutes=-59, seconds=-59, microseconds=-999_999),
    timedelta(hours=-12, microseconds=-250_001),
]
DURATIONS = ["30d", "1d", "1s", "1w", "PT0.5S", "P1DT12H", "P29DT23H59M59.999999S", "1000000w"]
SIGNED = ["-30d", "+1d", "-1s", "1h", "-P1DT12H", "-PT0.5S", "0s", "-7d"]
BAD_DATES = [
    "2026-02-30", "2023-02-29", "2026-13-01", "2026-00-10", "2026-01-00", "2026-01-05T24:00",
    "2026-01-05T23:60", "2026-01-05T23:59:60", "2026-01-05T10:00+24:00", "2026-01-05Z",
    "2026-01-05T10:30:00.", "2026-01-05T10:30.5", "2026-01-05t10:30", "2026-1-5",
    " 2026-01-05", "2026-01-05T10:30:00+05", "0000-01-01", "2026-01-05T10:30-05:3",
    "2026-01-05T10:30:00.5x", "2026-01-05T10:30+05:30Z", "2026-01-05T10", "2026-01-05 ",
    "2026-01-05T10:30+05:60", "2026-01-05T10:30:00-0099", "2026-01-05T10:30:00.1+2400",
]
# fmt: on
OTHERS: list[Any] = [None, [1, "a"], {"x": "y"}, [], {}]
ALPHABET = "aAbBzZéÉßİı0189-.:+ TZ_٣"


texts = st.one_of(
    st.sampled_from(WORDS), st.sampled_from(NUMBER_LIKE), st.text(alphabet=ALPHABET, max_size=6)
)
numeric_texts = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.decimals(-1000, 1000, places=3, allow_nan=False).map(str),
)
numbers = st.one_of(
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 3)),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(NUMBERS),
)


@st.composite
def moments(draw: st.DrawFn) -> datetime:
    """Instants around NOW, often exactly on an operand's boundary."""
    base = NOW + draw(st.sampled_from(MOMENTS))
    return base + draw(
        st.one_of(
            st.just(timedelta(0)),
            st.timedeltas(timedelta(days=-60), timedelta(days=60)),
        )
    )


def iso_form(
    moment: datetime, *, sep: str = "T", precision: str = "second", tz: str | int = "Z"
) -> str:
    """`moment` written as text; `tz` is "" (none), "Z", or an offset in minutes (written with
    a colon when positive-or-zero minutes are even, without otherwise, to vary the form)."""
    offset = timedelta(minutes=tz) if isinstance(tz, int) else timedelta(0)
    local = moment.astimezone(UTC).replace(tzinfo=None) + offset
    if precision == "date":
        return local.strftime("%Y-%m-%d")
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M")
    if precision != "minute":
        text += local.strftime(":%S")
    if precision.startswith("fraction"):  # "fraction3" keeps 3 digits of 9
        text += "." + f"{local.microsecond:06d}123"[: int(precision[8:])]
    if isinstance(tz, int):
        hours, minutes = divmod(abs(tz), 60)
        colon = ":" if tz % 2 == 0 else ""
        tz = f"{'-' if tz < 0 else '+'}{hours:02d}{colon}{minutes:02d}"
    return text + tz


@st.composite
def iso_texts(draw: st.DrawFn) -> str:
    """A valid date or datetime, in any of the accepted forms and offsets."""
    precision = draw(
        st.sampled_from(["date", "minute", "second", *(f"fraction{n}" for n in range(1, 10))])
    )
    tz = draw(st.one_of(st.sampled_from(["", "Z"]), st.integers(-1439, 1439)))
    return iso_form(draw(moments()), sep=draw(st.sampled_from("T ")), precision=precision, tz=tz)


scalars = st.one_of(texts, numeric_texts, numbers, st.booleans(), iso_texts())
stored_values = st.one_of(
    texts,
    numeric_texts,
    numbers,
    st.booleans(),
    iso_texts(),
    st.sampled_from(BAD_DATES),
    st.sampled_from(OTHERS),
)


@st.composite
def events(draw: st.DrawFn) -> EventSnapshot:
    return EventSnapshot(
        name=draw(st.sampled_from(EVENTS)),
        occurred_at=draw(moments()),
        properties=draw(
            st.dictionaries(st.sampled_from(EVENT_KEYS), st.one_of(scalars, st.none()), max_size=2)
        ),
    )


@st.composite
def worlds(draw: st.DrawFn) -> list[RecordSnapshot]:
    count = draw(st.integers(1, 8))
    return [
        RecordSnapshot(
            object_type=OBJECT_TYPE,
            id=f"r{i}",
            properties=draw(
                st.dictionaries(st.sampled_from(PROPERTIES), stored_values, max_size=3)
            ),
            lists=draw(st.frozensets(st.sampled_from(LISTS), max_size=2)),
            events=draw(st.lists(events(), max_size=4)),
        )
        for i in range(count)
    ]


def _valid(data: dict[str, Any]) -> bool:
    try:
        condition(data)
    except ValidationError:
        return False
    return True


orderables = st.one_of(numbers, iso_texts())
OPERANDS: dict[str, st.SearchStrategy[Any]] = {
    "eq": scalars,
    "neq": scalars,
    "in": st.lists(scalars, min_size=1, max_size=3),
    "not_in": st.lists(scalars, min_size=1, max_size=3),
    "contains": texts,
    "not_contains": texts,
    "starts_with": st.one_of(texts, iso_texts()),
    "ends_with": st.one_of(texts, numeric_texts),
    "gt": orderables,
    "gte": orderables,
    "lt": orderables,
    "lte": orderables,
    "between": st.one_of(
        st.lists(numbers, min_size=2, max_size=2), st.lists(iso_texts(), min_size=2, max_size=2)
    ),
    "known": st.none(),
    "unknown": st.none(),
    "before": st.one_of(iso_texts(), st.sampled_from(SIGNED)),
    "after": st.one_of(iso_texts(), st.sampled_from(SIGNED)),
    "within_last": st.sampled_from(DURATIONS),
    "more_than_ago": st.sampled_from(DURATIONS),
}


@st.composite
def property_filters(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(sorted(OPERANDS)))
    data: dict[str, Any] = {"property": draw(st.sampled_from(PROPERTIES)), "op": op}
    operand = draw(OPERANDS[op])
    if operand is not None:
        data["value"] = operand
    return data


@st.composite
def event_filters(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {"event": draw(st.sampled_from(EVENTS))}
    where = draw(
        st.dictionaries(st.sampled_from(EVENT_KEYS), st.one_of(scalars, st.none()), max_size=2)
    )
    if where:
        data["where"] = where
    if draw(st.booleans()):
        data["within"] = draw(st.sampled_from(DURATIONS))
    if draw(st.booleans()):
        data["min_count"] = draw(st.integers(1, 3))
    return data


leaves = st.one_of(
    property_filters(),
    property_filters(),
    st.builds(lambda n: {"in_list": n}, st.sampled_from([*LISTS, "missing"])),
    st.builds(lambda n: {"not_in_list": n}, st.sampled_from([*LISTS, "missing"])),
    event_filters(),
).filter(_valid)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda c: {"all": c}),
        st.lists(children, min_size=1, max_size=3).map(lambda c: {"any": c}),
        children.map(lambda c: {"not": c}),
    ),
    max_leaves=6,
)


@pytest.mark.parametrize("store_name", ["sqlite", "postgresql"])
def test_sql_agrees_with_python(request: pytest.FixtureRequest, store_name: str) -> None:
    store: CondStore = request.getfixturevalue(
        f"{'pg' if store_name == 'postgresql' else 'sqlite'}_store"
    )

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(world=worlds(), tree_data=st.lists(trees, min_size=1, max_size=4))
    def check(world: list[RecordSnapshot], tree_data: list[dict[str, Any]]) -> None:
        store.load(world)
        for data in tree_data:
            cond = condition(data)
            expected = {r.id for r in world if evaluate(cond, r, now=NOW)}
            assert {r.id for r in world if explain(cond, r, now=NOW).holds} == expected
            assert store.matching(cond) == expected, data

    check()


# ------------------------------------------------------------------- every operator × every value
# Deterministic and exhaustive where hypothesis samples: each leaf over one record per value.

FORMS: list[tuple[str, str, str | int]] = [
    ("T", "date", ""),
    ("T", "second", "Z"),
    (" ", "minute", ""),
    ("T", "fraction9", 330),
    ("T", "second", -481),
    (" ", "fraction1", -1439),
]
ISO_STORED = [
    iso_form(NOW + shift, sep=sep, precision=precision, tz=tz)
    for shift in MOMENTS
    for sep, precision, tz in FORMS
]
STORED: list[Any] = [
    *WORDS, *NUMBER_LIKE, *NUMBERS, True, False, *BAD_DATES, *OTHERS, *ISO_STORED,
    "99.5", "-3", "1e308", "2026-03-01T12:00:00.250Z", "0001-01-01", "9999-12-31T23:59:59-23:59",
]  # fmt: skip
ISO_OPERANDS = [
    "2026-03-01", "2026-01-30", "2026-02-28", iso_form(NOW), iso_form(NOW - timedelta(days=30)),
    "2026-03-01T12:00:00.9+00:00", "2026-03-01T13:00+01:00", "2026-01-30T12:00:00.250Z",
    "2026-03-01 11:59", "2026-03-01T12:00:01-0000",
]  # fmt: skip
SCALAR_OPERANDS: list[Any] = [
    "lead", "LEAD", "é", "ß", "true", "FALSE", "120", "120.0", "007", "7", "-0", "x", "",
    120, 7, 0, -0.5, 99.5, 10**400, 2**53 + 1, 0.1, True, False, "2026-03-01",
]  # fmt: skip
TEXT_OPERANDS = ["ead", "E", "1", "-", ".", "2026-0", ":00", "ß", "É", "t", "Z", " ", "0 "]
ORDER_OPERANDS: list[Any] = [-1, 0, 7, 99.5, 120, 1e300, 10**400, *ISO_OPERANDS]
LEAVES: list[dict[str, Any]] = [
    *({"op": op, "value": v} for op in ("eq", "neq") for v in SCALAR_OPERANDS),
    *(
        {"op": op, "value": v}
        for op in ("in", "not_in")
        for v in (["lead", 7], ["true", 120.0, "é"], [False, "x", "2026-03-01"], [10**400])
    ),
    *(
        {"op": op, "value": v}
        for op in ("contains", "not_contains", "starts_with", "ends_with")
        for v in TEXT_OPERANDS
    ),
    *({"op": op, "value": v} for op in ("gt", "gte", "lt", "lte") for v in ORDER_OPERANDS),
    *(
        {"op": "between", "value": v}
        for v in ([0, 120], [-1, 7], [120, 0], [7, 7], ISO_OPERANDS[:2][::-1], ISO_OPERANDS[3:5])
    ),
    *({"op": op, "value": v} for op in ("before", "after") for v in [*ISO_OPERANDS, *SIGNED]),
    *({"op": op, "value": v} for op in ("within_last", "more_than_ago") for v in DURATIONS),
    {"op": "known"},
    {"op": "unknown"},
]


def test_matrix_covers_every_operator() -> None:
    assert {leaf["op"] for leaf in LEAVES} == {op.value for op in PropertyOp}


@pytest.mark.parametrize("store_name", ["sqlite", "postgresql"])
def test_every_operator_on_every_value(request: pytest.FixtureRequest, store_name: str) -> None:
    store: CondStore = request.getfixturevalue(
        f"{'pg' if store_name == 'postgresql' else 'sqlite'}_store"
    )
    world = [
        RecordSnapshot(object_type=OBJECT_TYPE, id=f"v{i}", properties={"p": value})
        for i, value in enumerate(STORED)
    ]
    world.append(RecordSnapshot(object_type=OBJECT_TYPE, id="missing"))
    store.load(world)
    values = {r.id: r.properties.get("p", "<missing>") for r in world}
    mismatches = []
    for leaf in LEAVES:
        for data in ({"property": "p", **leaf}, {"not": {"property": "p", **leaf}}):
            cond = condition(data)
            expected = {r.id for r in world if evaluate(cond, r, now=NOW)}
            found = store.matching(cond)
            if found != expected:
                wrong = sorted(found ^ expected)
                mismatches.append(f"{data}: differ on {[values[i] for i in wrong]}")
    assert not mismatches, "\n".join(mismatches)
